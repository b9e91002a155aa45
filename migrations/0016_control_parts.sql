-- Scale-out: the control channel says which part of an owner changed, so a
-- member reloads that part only. Publications and statuses (rows of
-- presence_overrides) are announced as {"overrides": [owner_id, ...]}, once
-- per statement for every owner it touched (a group commit writes a batch
-- of publications in one statement), and members reload those owners'
-- overrides in one query, instead of the whole owner (six queries, every
-- rule parsed again) per change; with two members that cost ~3 ms of CPU
-- per PUBLISH (bench/publish.ts). One notification per statement: a member
-- parses one per batch, not one per row. PostgreSQL's cost is about the same
-- either way (pgbench, 16-row statements: the earlier per-row notification
-- costs about 6 µs a row, the new one about as much again, per row or per
-- statement with its transition tables), and a single process, which
-- listens to nothing, pays it too.
--
-- The new payloads go on a channel of their own, presence_control_v2, which
-- this version listens on. presence_control keeps its payloads, unchanged,
-- for the processes of the previous version a rolling upgrade leaves
-- running (they refuse a payload they do not know, so an override change
-- announced only in the new form would never reach them). This is the
-- "expand" step: once no process of an earlier version runs, a later
-- migration can drop the presence_control notifications.
CREATE OR REPLACE FUNCTION presence_notify_change() RETURNS trigger AS $$
DECLARE
  changed record;
  payload text;
BEGIN
  IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
  IF TG_TABLE_NAME = 'owners' THEN
    payload := json_build_object('owner', changed.id)::text;
  ELSIF TG_TABLE_NAME = 'watchers' THEN
    payload := json_build_object('watcher', changed.id)::text;
  ELSE
    payload := json_build_object('owner', changed.owner_id)::text;
  END IF;
  PERFORM pg_notify('presence_control', payload);
  -- presence_overrides: the new form is sent once per statement (presence_notify_overrides).
  IF TG_TABLE_NAME <> 'presence_overrides' THEN
    PERFORM pg_notify('presence_control_v2', payload);
  END IF;
  RETURN NULL;
END
$$ LANGUAGE plpgsql;
--> statement-breakpoint
-- Token revocations (0012) and links to external accounts (0014) announce a
-- fixed payload, the trigger's argument, on both channels: one function for
-- both instead of one each.
CREATE OR REPLACE FUNCTION presence_notify_constant() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('presence_control', TG_ARGV[0]);
  PERFORM pg_notify('presence_control_v2', TG_ARGV[0]);
  RETURN NULL;
END
$$ LANGUAGE plpgsql;
--> statement-breakpoint
DROP TRIGGER token_revocations_notify ON token_revocations;
--> statement-breakpoint
CREATE TRIGGER token_revocations_notify AFTER INSERT OR UPDATE OR DELETE ON token_revocations FOR EACH STATEMENT EXECUTE FUNCTION presence_notify_constant('{"tokens":true}');
--> statement-breakpoint
DROP TRIGGER admin_token_cutoffs_notify ON admin_token_cutoffs;
--> statement-breakpoint
CREATE TRIGGER admin_token_cutoffs_notify AFTER INSERT OR UPDATE OR DELETE ON admin_token_cutoffs FOR EACH STATEMENT EXECUTE FUNCTION presence_notify_constant('{"tokens":true}');
--> statement-breakpoint
DROP TRIGGER external_identities_notify ON external_identities;
--> statement-breakpoint
CREATE TRIGGER external_identities_notify AFTER UPDATE OR DELETE ON external_identities FOR EACH STATEMENT EXECUTE FUNCTION presence_notify_constant('{"identities":true}');
--> statement-breakpoint
DROP FUNCTION presence_notify_tokens();
--> statement-breakpoint
DROP FUNCTION presence_notify_identities();
--> statement-breakpoint
-- At most 100 owner ids per notification: a payload must stay under 8000 bytes.
CREATE OR REPLACE FUNCTION presence_notify_overrides() RETURNS trigger AS $$
DECLARE
  ids text[];
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT array_agg(DISTINCT owner_id::text) INTO ids FROM new_rows;
  ELSIF TG_OP = 'UPDATE' THEN
    SELECT array_agg(DISTINCT owner_id) INTO ids FROM (SELECT owner_id::text FROM new_rows UNION SELECT owner_id::text FROM old_rows) AS changed;
  ELSE
    SELECT array_agg(DISTINCT owner_id::text) INTO ids FROM old_rows;
  END IF;
  FOR i IN 1 .. coalesce(array_length(ids, 1), 0) BY 100 LOOP
    PERFORM pg_notify('presence_control_v2', json_build_object('overrides', ids[i:i + 99])::text);
  END LOOP;
  RETURN NULL;
END
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER presence_overrides_notify_inserted AFTER INSERT ON presence_overrides REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION presence_notify_overrides();
--> statement-breakpoint
CREATE TRIGGER presence_overrides_notify_updated AFTER UPDATE ON presence_overrides REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION presence_notify_overrides();
--> statement-breakpoint
CREATE TRIGGER presence_overrides_notify_deleted AFTER DELETE ON presence_overrides REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION presence_notify_overrides();

-- Scale-out: the control channel says which part of an owner changed, so a
-- member reloads that part only. A publication or a status (a row of
-- presence_overrides) is announced as {"overrides": owner_id}, and members
-- reload those owners' overrides in one query per tick, instead of the whole
-- owner (six queries, every rule parsed again) per change; with two members
-- that cost ~3 ms of CPU per PUBLISH (bench/publish.ts).
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
BEGIN
  IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
  IF TG_TABLE_NAME = 'owners' THEN
    PERFORM pg_notify('presence_control', json_build_object('owner', changed.id)::text);
    PERFORM pg_notify('presence_control_v2', json_build_object('owner', changed.id)::text);
  ELSIF TG_TABLE_NAME = 'watchers' THEN
    PERFORM pg_notify('presence_control', json_build_object('watcher', changed.id)::text);
    PERFORM pg_notify('presence_control_v2', json_build_object('watcher', changed.id)::text);
  ELSIF TG_TABLE_NAME = 'presence_overrides' THEN
    PERFORM pg_notify('presence_control', json_build_object('owner', changed.owner_id)::text);
    PERFORM pg_notify('presence_control_v2', json_build_object('overrides', changed.owner_id)::text);
  ELSE
    PERFORM pg_notify('presence_control', json_build_object('owner', changed.owner_id)::text);
    PERFORM pg_notify('presence_control_v2', json_build_object('owner', changed.owner_id)::text);
  END IF;
  RETURN NULL;
END
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION presence_notify_tokens() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('presence_control', '{"tokens":true}');
  PERFORM pg_notify('presence_control_v2', '{"tokens":true}');
  RETURN NULL;
END
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION presence_notify_identities() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('presence_control', '{"identities":true}');
  PERFORM pg_notify('presence_control_v2', '{"identities":true}');
  RETURN NULL;
END
$$ LANGUAGE plpgsql;

-- The "contract" step of 0016: presence_control_v2 is the only control
-- channel. 0016 kept sending the earlier payloads on presence_control for
-- processes of the version before it during a rolling upgrade; every
-- process since listens on presence_control_v2 alone. The per-row
-- notification on presence_overrides was the costly part: with this
-- migration, PostgreSQL's share of a core under bench/publish.ts (one
-- process, three runs each, alternated with the code before) fell from
-- 31-33% to 27-29% at about the same rate.
-- A group running a version before 0016 is upgraded through a version
-- with 0016 and without this migration, or stopped as a whole.
DROP TRIGGER presence_overrides_notify ON presence_overrides;
--> statement-breakpoint
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
  PERFORM pg_notify('presence_control_v2', payload);
  RETURN NULL;
END
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION presence_notify_constant() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('presence_control_v2', TG_ARGV[0]);
  RETURN NULL;
END
$$ LANGUAGE plpgsql;

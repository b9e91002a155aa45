-- Scale-out: every committed change to what the processes hold in memory
-- (owners and their settings, devices, watchers, rules, groups, manual
-- statuses and publications, webhooks) is announced on the channel
-- presence_control, so each process reloads that owner or watcher.
-- A trigger, not application code: the notification is sent only if the
-- transaction commits, and no write path (the API, presencectl, an
-- operator's SQL) can forget it. PostgreSQL folds identical notifications
-- of one transaction into one.
CREATE OR REPLACE FUNCTION presence_notify_change() RETURNS trigger AS $$
DECLARE
  changed record;
BEGIN
  IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
  IF TG_TABLE_NAME = 'owners' THEN
    PERFORM pg_notify('presence_control', json_build_object('owner', changed.id)::text);
  ELSIF TG_TABLE_NAME = 'watchers' THEN
    PERFORM pg_notify('presence_control', json_build_object('watcher', changed.id)::text);
  ELSE
    PERFORM pg_notify('presence_control', json_build_object('owner', changed.owner_id)::text);
  END IF;
  RETURN NULL;
END
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER owners_notify AFTER INSERT OR UPDATE OR DELETE ON owners FOR EACH ROW EXECUTE FUNCTION presence_notify_change();
--> statement-breakpoint
CREATE TRIGGER devices_notify AFTER INSERT OR UPDATE OR DELETE ON devices FOR EACH ROW EXECUTE FUNCTION presence_notify_change();
--> statement-breakpoint
CREATE TRIGGER watchers_notify AFTER INSERT OR UPDATE OR DELETE ON watchers FOR EACH ROW EXECUTE FUNCTION presence_notify_change();
--> statement-breakpoint
CREATE TRIGGER consent_rules_notify AFTER INSERT OR UPDATE OR DELETE ON consent_rules FOR EACH ROW EXECUTE FUNCTION presence_notify_change();
--> statement-breakpoint
CREATE TRIGGER watcher_groups_notify AFTER INSERT OR UPDATE OR DELETE ON watcher_groups FOR EACH ROW EXECUTE FUNCTION presence_notify_change();
--> statement-breakpoint
CREATE TRIGGER presence_overrides_notify AFTER INSERT OR UPDATE OR DELETE ON presence_overrides FOR EACH ROW EXECUTE FUNCTION presence_notify_change();
--> statement-breakpoint
CREATE TRIGGER webhooks_notify AFTER INSERT OR UPDATE OR DELETE ON webhooks FOR EACH ROW EXECUTE FUNCTION presence_notify_change();

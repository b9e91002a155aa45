-- Webhooks name a handle, not an owner: a handle no owner holds is
-- registered too (its view is the offline one, as a read's is), so that
-- registering a webhook no longer tells a watcher whether a handle exists.
-- owner_id is null until an owner takes the handle; erasing the owner
-- still deletes its webhooks (cascade), the handle with them.
-- The "when" of this migration in meta/_journal.json is after 0017's
-- (which was set ahead by hand): drizzle applies only later ones.
ALTER TABLE "webhooks" ALTER COLUMN "owner_id" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "webhooks" ADD COLUMN "handle" text;--> statement-breakpoint
UPDATE "webhooks" SET "handle" = "owners"."handle" FROM "owners" WHERE "owners"."id" = "webhooks"."owner_id";--> statement-breakpoint
ALTER TABLE "webhooks" ALTER COLUMN "handle" SET NOT NULL;--> statement-breakpoint
CREATE INDEX "webhooks_owner_idx" ON "webhooks" USING btree ("owner_id");--> statement-breakpoint
CREATE INDEX "webhooks_handle_idx" ON "webhooks" USING btree ("handle");--> statement-breakpoint
-- An owner taking a handle takes the webhooks waiting on it, whatever
-- creates the owner (the API, presencectl, an operator's SQL); a webhook
-- registered on a handle an owner holds gets that owner. Both take the
-- same transaction lock on the handle first, so a webhook inserted while
-- the owner is being created is bound by one side or the other: the
-- second waits for the first to commit, and each statement of a PL/pgSQL
-- function reads with a fresh snapshot (READ COMMITTED), so it sees it.
-- Erasing an owner takes it too, so a webhook inserted meanwhile is
-- either deleted with the owner or inserted after, waiting.
-- The lock is the two-key form (class 2003331955, "whks", and the
-- handle's hash): a key space of its own, apart from the one-key locks
-- (the delivery lease, the migrations), so no handle can be chosen to
-- collide with them.
CREATE OR REPLACE FUNCTION presence_bind_webhooks() RETURNS trigger AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(2003331955, hashtext(NEW.handle));
  UPDATE webhooks SET owner_id = NEW.id WHERE handle = NEW.handle AND owner_id IS NULL;
  RETURN NULL;
END
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER owners_bind_webhooks AFTER INSERT ON owners FOR EACH ROW EXECUTE FUNCTION presence_bind_webhooks();
--> statement-breakpoint
CREATE OR REPLACE FUNCTION presence_lock_owner_handle() RETURNS trigger AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(2003331955, hashtext(OLD.handle));
  RETURN OLD;
END
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER owners_lock_handle BEFORE DELETE ON owners FOR EACH ROW EXECUTE FUNCTION presence_lock_owner_handle();
--> statement-breakpoint
CREATE OR REPLACE FUNCTION presence_webhook_owner() RETURNS trigger AS $$
BEGIN
  -- A process of the version before this migration (a rolling upgrade)
  -- names the owner only: its handle is filled in.
  IF NEW.handle IS NULL THEN
    NEW.handle := (SELECT handle FROM owners WHERE id = NEW.owner_id);
  END IF;
  PERFORM pg_advisory_xact_lock(2003331955, hashtext(NEW.handle));
  NEW.owner_id := (SELECT id FROM owners WHERE handle = NEW.handle);
  RETURN NEW;
END
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER webhooks_owner BEFORE INSERT ON webhooks FOR EACH ROW EXECUTE FUNCTION presence_webhook_owner();
--> statement-breakpoint
-- Scale-out: a webhook of no owner is announced by its handle, so each
-- process reloads the webhooks waiting on it; binding one announces both
-- the handle (it left) and the owner (it arrived).
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
  ELSIF TG_TABLE_NAME = 'webhooks' THEN
    IF TG_OP = 'UPDATE' AND OLD.owner_id IS DISTINCT FROM NEW.owner_id THEN
      IF OLD.owner_id IS NULL THEN
        PERFORM pg_notify('presence_control_v2', json_build_object('handle', OLD.handle)::text);
      ELSE
        PERFORM pg_notify('presence_control_v2', json_build_object('owner', OLD.owner_id)::text);
      END IF;
    END IF;
    IF changed.owner_id IS NULL THEN
      payload := json_build_object('handle', changed.handle)::text;
    ELSE
      payload := json_build_object('owner', changed.owner_id)::text;
    END IF;
  ELSE
    payload := json_build_object('owner', changed.owner_id)::text;
  END IF;
  PERFORM pg_notify('presence_control_v2', payload);
  RETURN NULL;
END
$$ LANGUAGE plpgsql;

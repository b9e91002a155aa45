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
CREATE OR REPLACE FUNCTION presence_lock_webhook_handle(handle text) RETURNS void AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(2003331955, hashtext(handle));
END
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION presence_bind_webhooks() RETURNS trigger AS $$
BEGIN
  PERFORM presence_lock_webhook_handle(NEW.handle);
  UPDATE webhooks SET owner_id = NEW.id WHERE handle = NEW.handle AND owner_id IS NULL;
  RETURN NULL;
END
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER owners_bind_webhooks AFTER INSERT ON owners FOR EACH ROW EXECUTE FUNCTION presence_bind_webhooks();
--> statement-breakpoint
CREATE OR REPLACE FUNCTION presence_lock_owner_handle() RETURNS trigger AS $$
BEGIN
  PERFORM presence_lock_webhook_handle(OLD.handle);
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
  PERFORM presence_lock_webhook_handle(NEW.handle);
  NEW.owner_id := (SELECT id FROM owners WHERE handle = NEW.handle);
  RETURN NEW;
END
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER webhooks_owner BEFORE INSERT ON webhooks FOR EACH ROW EXECUTE FUNCTION presence_webhook_owner();
--> statement-breakpoint
-- Scale-out: webhooks get a notification function of their own (the one
-- of 0008/0017, shared by the other tables, is left as it is). A webhook
-- of no owner is announced by its handle, so each process reloads the
-- webhooks of that handle; the row as it was and as it is are both
-- announced, so binding one tells the handle it left and the owner it
-- joined (PostgreSQL folds identical notifications of one transaction).
CREATE OR REPLACE FUNCTION presence_announce_webhook(owner_id uuid, handle text) RETURNS void AS $$
BEGIN
  IF owner_id IS NULL THEN
    PERFORM pg_notify('presence_control_v2', json_build_object('handle', handle)::text);
  ELSE
    PERFORM pg_notify('presence_control_v2', json_build_object('owner', owner_id)::text);
  END IF;
END
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION presence_notify_webhook_change() RETURNS trigger AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN PERFORM presence_announce_webhook(OLD.owner_id, OLD.handle); END IF;
  IF TG_OP <> 'DELETE' THEN PERFORM presence_announce_webhook(NEW.owner_id, NEW.handle); END IF;
  RETURN NULL;
END
$$ LANGUAGE plpgsql;
--> statement-breakpoint
DROP TRIGGER webhooks_notify ON webhooks;
--> statement-breakpoint
CREATE TRIGGER webhooks_notify AFTER INSERT OR UPDATE OR DELETE ON webhooks FOR EACH ROW EXECUTE FUNCTION presence_notify_webhook_change();

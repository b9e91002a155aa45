-- Device broker passwords expire with their tokens (issue 7): with
-- MQTT_DEVICE_CREDENTIALS=mosquitto-dynsec a device token is its broker
-- password, which Mosquitto cannot see expire; the service records the
-- expiry and disables the broker client when it passes.
ALTER TABLE "devices" ADD COLUMN "broker_password_expires_at" timestamp with time zone;--> statement-breakpoint
CREATE INDEX "devices_broker_password_expiry_idx" ON "devices" USING btree ("broker_password_expires_at") WHERE "devices"."broker_password_expires_at" is not null;--> statement-breakpoint
-- Devices registered before this migration: their current token's expiry
-- was not recorded; the longest lifetime a device token can have (400
-- days from now) bounds it. Without announcing every row to the processes
-- (they are restarting onto this migration anyway).
ALTER TABLE "devices" DISABLE TRIGGER "devices_notify";--> statement-breakpoint
UPDATE "devices" SET "broker_password_expires_at" = now() + interval '400 days' WHERE "revoked_at" IS NULL;--> statement-breakpoint
ALTER TABLE "devices" ENABLE TRIGGER "devices_notify";--> statement-breakpoint
-- The expiry (written on every token issued and every sweep) is not
-- something the processes hold in memory: only the columns they do hold
-- make them reload the owner.
DROP TRIGGER "devices_notify" ON "devices";--> statement-breakpoint
CREATE TRIGGER devices_notify AFTER INSERT OR DELETE OR UPDATE OF id, owner_id, device_class, name, revoked_at ON devices FOR EACH ROW EXECUTE FUNCTION presence_notify_change();

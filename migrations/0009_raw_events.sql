-- Retained sensor events (privacy invariant 4): written only for owners whose
-- settings say keepRawEventsDays > 0, purged past min(that, RAW_EVENTS_MAX_DAYS),
-- and erased with the owner (ON DELETE CASCADE, like every owner table).
CREATE TABLE "raw_events" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"owner_id" uuid NOT NULL,
	"device_id" uuid NOT NULL,
	"received_at" timestamp with time zone NOT NULL,
	"event" jsonb NOT NULL
);
--> statement-breakpoint
ALTER TABLE "raw_events" ADD CONSTRAINT "raw_events_owner_id_owners_id_fk" FOREIGN KEY ("owner_id") REFERENCES "public"."owners"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "raw_events_owner_received_idx" ON "raw_events" USING btree ("owner_id","received_at","id");--> statement-breakpoint
CREATE INDEX "raw_events_received_idx" ON "raw_events" USING btree ("received_at");
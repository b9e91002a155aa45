DROP INDEX "access_log_owner_at_idx";--> statement-breakpoint
CREATE INDEX "access_log_at_idx" ON "access_log" USING btree ("at");--> statement-breakpoint
CREATE INDEX "access_log_owner_at_idx" ON "access_log" USING btree ("owner_id","at","id");
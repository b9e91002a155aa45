-- Operators' actions audited, and API tokens revocable one by one (issue 7,
-- "a careless operator"): admin_actions records each admin request before it
-- runs; its owner_id is set to null on the owner's erasure (ON DELETE SET
-- NULL), so the operators' trail stays without leading back to them.
-- token_revocations (by token id) and admin_token_cutoffs (admin tokens by
-- subject and time) are announced on presence_control so every process of a
-- group reloads them.
CREATE TABLE "admin_actions" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"at" timestamp with time zone NOT NULL,
	"operator" text NOT NULL,
	"token_id" text,
	"token_expires_at" timestamp with time zone NOT NULL,
	"method" text NOT NULL,
	"route" text NOT NULL,
	"owner_id" uuid,
	"watcher_id" uuid,
	"status" integer
);
--> statement-breakpoint
CREATE TABLE "admin_token_cutoffs" (
	"subject" text PRIMARY KEY NOT NULL,
	"not_before" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "token_revocations" (
	"token_id" text PRIMARY KEY NOT NULL,
	"revoked_at" timestamp with time zone NOT NULL,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
ALTER TABLE "admin_actions" ADD CONSTRAINT "admin_actions_owner_id_owners_id_fk" FOREIGN KEY ("owner_id") REFERENCES "public"."owners"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "admin_actions" ADD CONSTRAINT "admin_actions_watcher_id_watchers_id_fk" FOREIGN KEY ("watcher_id") REFERENCES "public"."watchers"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "admin_actions_owner_at_idx" ON "admin_actions" USING btree ("owner_id","at","id");--> statement-breakpoint
CREATE INDEX "admin_actions_at_idx" ON "admin_actions" USING btree ("at");--> statement-breakpoint
CREATE OR REPLACE FUNCTION presence_notify_tokens() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('presence_control', '{"tokens":true}');
  RETURN NULL;
END
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER token_revocations_notify AFTER INSERT OR UPDATE OR DELETE ON token_revocations FOR EACH STATEMENT EXECUTE FUNCTION presence_notify_tokens();
--> statement-breakpoint
CREATE TRIGGER admin_token_cutoffs_notify AFTER INSERT OR UPDATE OR DELETE ON admin_token_cutoffs FOR EACH STATEMENT EXECUTE FUNCTION presence_notify_tokens();

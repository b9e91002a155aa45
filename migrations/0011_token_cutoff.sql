-- Tokens revoked by subject (issue 7, identity): an owner or watcher whose
-- tokens were revoked refuses every token issued at or before this instant
-- (a lost phone, a leaked app token). Tokens are not stored, so revoking by
-- time is what reaches a token nobody can name; the owners and watchers
-- triggers of 0008 tell the other processes.
ALTER TABLE "owners" ADD COLUMN "tokens_not_before" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "watchers" ADD COLUMN "tokens_not_before" timestamp with time zone;
-- Webhooks remember the watcher token that registered them (issue 7):
-- revoking that one token by its id removes them, as revoking all of the
-- watcher's tokens by subject already did. Older webhooks have none.
ALTER TABLE "webhooks" ADD COLUMN "token_id" text;--> statement-breakpoint
CREATE INDEX "webhooks_token_idx" ON "webhooks" USING btree ("token_id") WHERE "webhooks"."token_id" is not null;
CREATE TABLE "access_requests" (
	"owner_id" uuid NOT NULL,
	"watcher_id" uuid NOT NULL,
	"status" text NOT NULL,
	"event" text NOT NULL,
	"message" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "access_requests_owner_id_watcher_id_pk" PRIMARY KEY("owner_id","watcher_id"),
	CONSTRAINT "access_requests_status" CHECK ("access_requests"."status" in ('pending', 'active', 'terminated'))
);
--> statement-breakpoint
CREATE TABLE "watcher_groups" (
	"id" uuid PRIMARY KEY NOT NULL,
	"owner_id" uuid NOT NULL,
	"name" text NOT NULL,
	"members" jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "consent_rules" ADD COLUMN "arrived_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "presence_overrides" ADD COLUMN "note" text;--> statement-breakpoint
ALTER TABLE "watchers" ADD COLUMN "domain" text;--> statement-breakpoint
ALTER TABLE "access_requests" ADD CONSTRAINT "access_requests_owner_id_owners_id_fk" FOREIGN KEY ("owner_id") REFERENCES "public"."owners"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "access_requests" ADD CONSTRAINT "access_requests_watcher_id_watchers_id_fk" FOREIGN KEY ("watcher_id") REFERENCES "public"."watchers"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "watcher_groups" ADD CONSTRAINT "watcher_groups_owner_id_owners_id_fk" FOREIGN KEY ("owner_id") REFERENCES "public"."owners"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "watcher_groups_owner_idx" ON "watcher_groups" USING btree ("owner_id");
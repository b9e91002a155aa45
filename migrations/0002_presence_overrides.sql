CREATE TABLE "presence_overrides" (
	"owner_id" uuid NOT NULL,
	"source" text NOT NULL,
	"availability" text NOT NULL,
	"activities" jsonb NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "presence_overrides_owner_id_source_pk" PRIMARY KEY("owner_id","source")
);
--> statement-breakpoint
ALTER TABLE "presence_overrides" ADD CONSTRAINT "presence_overrides_owner_id_owners_id_fk" FOREIGN KEY ("owner_id") REFERENCES "public"."owners"("id") ON DELETE cascade ON UPDATE no action;
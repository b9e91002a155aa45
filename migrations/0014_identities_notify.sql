-- An unlinked (or relinked) external account ends on every process of a
-- group, not only where it was unlinked (issue 7, identity): a change to
-- external_identities is announced on presence_control, and each process
-- forgets the tokens it verified (a provider token is verified again, and
-- its link looked up, on its next use).
CREATE OR REPLACE FUNCTION presence_notify_identities() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('presence_control', '{"identities":true}');
  RETURN NULL;
END
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER external_identities_notify AFTER UPDATE OR DELETE ON external_identities FOR EACH STATEMENT EXECUTE FUNCTION presence_notify_identities();

-- The audit trail, keyed and counted: `mac` is an HMAC of each row's hash with a key that is not in
-- this database; `seq` is the row's position in the chain (what its anchors count). TRUNCATE, which
-- row triggers do not see, is refused too, and nobody but the table's owner may change or remove
-- rows (the bot's runtime role, when it is not the owner, only reads and inserts).
ALTER TABLE audit_trail ADD COLUMN mac text;
ALTER TABLE audit_trail ADD COLUMN seq bigint;
ALTER TABLE audit_trail DISABLE TRIGGER audit_trail_no_update;
UPDATE audit_trail AS t SET seq = n.seq
FROM (SELECT id, row_number() OVER (ORDER BY id) AS seq FROM audit_trail) AS n
WHERE n.id = t.id;
ALTER TABLE audit_trail ENABLE TRIGGER audit_trail_no_update;
ALTER TABLE audit_trail ALTER COLUMN seq SET NOT NULL;
CREATE UNIQUE INDEX audit_trail_seq ON audit_trail (seq);

CREATE FUNCTION audit_trail_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_trail is append-only (TRUNCATE refused)';
END;
$$;
CREATE TRIGGER audit_trail_no_truncate BEFORE TRUNCATE ON audit_trail
    FOR EACH STATEMENT EXECUTE FUNCTION audit_trail_no_truncate();
REVOKE UPDATE, DELETE, TRUNCATE ON audit_trail FROM PUBLIC;

-- Which trail this is: its anchors are kept under this id, so a new database (or one restored from
-- a backup, which is a rollback of the trail) is compared with its own anchors, not another's.
CREATE TABLE trail_identity (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO trail_identity DEFAULT VALUES;
CREATE TRIGGER trail_identity_fixed BEFORE UPDATE OR DELETE ON trail_identity
    FOR EACH ROW EXECUTE FUNCTION audit_trail_append_only();
CREATE TRIGGER trail_identity_no_truncate BEFORE TRUNCATE ON trail_identity
    FOR EACH STATEMENT EXECUTE FUNCTION audit_trail_no_truncate();
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON trail_identity FROM PUBLIC;

-- Indexes on the platform's audit_log that chatops /audit relies on to stay fast on millions of rows.
-- chatops never runs this file: it only prints it (`chatops audit indexes`, `/audit indexes`).
-- Review it, then apply it as the table's owner, one statement at a time outside a transaction
-- (CREATE INDEX CONCURRENTLY does not block writes but cannot run inside BEGIN ... COMMIT):
--   psql -X -v ON_ERROR_STOP=1 -d <platform database> -f audit_indexes.sql
-- A CONCURRENTLY build that fails leaves an INVALID index: DROP INDEX CONCURRENTLY it and re-run.
-- Afterwards run ANALYZE audit_log so that the planner sees the new statistics.

-- Serves: every form's window and every export (timestamp >= now() - since), rows in time order.
-- The sandbox's schema already creates this one under the same name; IF NOT EXISTS keeps it.
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_timestamp_idx
    ON audit_log (timestamp);

-- Serves: /audit mfa, /audit security and export action=... (action = $1 or ANY($1) in the window).
-- User and address are in the index so that counts by action read the index alone. It makes a
-- plain (action, timestamp) index (the sandbox has audit_log_action_timestamp_idx) redundant.
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_action_timestamp_covering_idx
    ON audit_log (action, timestamp) INCLUDE (user_id, username, ip_address);

-- Serves: /audit user <user id> (user_id = $1 in the window, newest first).
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_user_id_timestamp_idx
    ON audit_log (user_id, timestamp);

-- Serves: /audit user <username> (username = $1 in the window, newest first).
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_username_timestamp_idx
    ON audit_log (username, timestamp);

-- Serves: /audit ip <address or CIDR> (ip_address <<= $1, which PostgreSQL turns into a range scan).
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_ip_address_timestamp_idx
    ON audit_log (ip_address, timestamp);

-- Serves: /audit request <request id> (details->>'request_id' = ANY($1)), in place of the runbook's
-- details::text LIKE '%...%', which reads and casts every row of the table.
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_request_id_idx
    ON audit_log ((details->>'request_id'));

-- Serves: /audit failed-logins (the runbook's brute-force query): only failed logins, with username
-- and IP in the index so that counting them per user reads the index alone.
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_failed_login_idx
    ON audit_log (timestamp) INCLUDE (username, ip_address)
    WHERE action = 'LOGIN' AND details->>'success' = 'false';

-- Indexes on the platform's audit_log that chatops /audit relies on to stay fast on millions of rows.
-- chatops never runs this file: it only prints it (`chatops audit indexes`, `/audit indexes`).
-- Review it, then apply it as the table's owner, one statement at a time outside a transaction
-- (CREATE INDEX CONCURRENTLY does not block writes but cannot run inside BEGIN ... COMMIT):
--   psql -X -v ON_ERROR_STOP=1 -d <platform database> -f audit_indexes.sql
-- A CONCURRENTLY build that fails leaves an INVALID index: DROP INDEX CONCURRENTLY it and re-run.
-- Afterwards run ANALYZE audit_log so that the planner sees the new statistics.
-- How /audit uses them: a bounded count through the form's index first; up to 20,000 matching rows
-- every figure is exact; beyond, breakdowns come from a sample read through the same index (rows in
-- evenly spaced slices of time, so the rest is never touched), and totals are exact from the index
-- alone up to 100,000 rows (hence the INCLUDE columns), estimated (≈) beyond. The rows shown are
-- always exact. Without its index a form reads the table once and its answer names the index.
-- Earlier versions of this file made audit_log_timestamp_idx, audit_log_user_id_timestamp_idx,
-- audit_log_username_timestamp_idx and audit_log_ip_address_timestamp_idx: the covering indexes
-- below replace them; once these are valid, DROP INDEX CONCURRENTLY the old ones.

-- Serves: every form's window and every export (timestamp >= now() - since), rows in time order;
-- /audit ip <CIDR>: a wide range is sampled in slices of time here, its address checked in the
-- index alone (hence ip_address and id). It makes the plain audit_log_timestamp_idx (the sandbox's
-- schema has it) redundant.
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_timestamp_covering_idx
    ON audit_log (timestamp) INCLUDE (ip_address, id);

-- Serves: /audit mfa, /audit security and export action=... (action = $1 or ANY($1) in the window).
-- User and address are in the index so that counts by action read the index alone. It makes a
-- plain (action, timestamp) index (the sandbox has audit_log_action_timestamp_idx) redundant.
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_action_timestamp_covering_idx
    ON audit_log (action, timestamp) INCLUDE (user_id, username, ip_address);

-- Serves: /audit user <user id> (user_id = $1 in the window, newest first); its totals from the
-- index alone. Replaces audit_log_user_id_timestamp_idx.
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_user_id_timestamp_covering_idx
    ON audit_log (user_id, timestamp) INCLUDE (username, ip_address);

-- Serves: /audit user <username> (username = $1 in the window, newest first); its totals from the
-- index alone. Replaces audit_log_username_timestamp_idx.
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_username_timestamp_covering_idx
    ON audit_log (username, timestamp) INCLUDE (user_id, ip_address);

-- Serves: /audit ip <address or CIDR> (ip_address = $1, or <<= $1, which PostgreSQL turns into a
-- range scan). A range's rows are not in time order in it: its sample is read from the index alone
-- (hence id), then fetched by id. Replaces audit_log_ip_address_timestamp_idx.
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_ip_address_timestamp_covering_idx
    ON audit_log (ip_address, timestamp) INCLUDE (id, user_id, username);

-- Serves: /audit request <request id> (details->>'request_id' = ANY($1)), in place of the runbook's
-- details::text LIKE '%...%', which reads and casts every row of the table.
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_request_id_idx
    ON audit_log ((details->>'request_id'));

-- Serves: /audit failed-logins (the runbook's brute-force query): only failed logins, with username
-- and IP in the index so that counting them and sampling their addresses read the index alone.
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_failed_login_idx
    ON audit_log (timestamp) INCLUDE (username, ip_address)
    WHERE action = 'LOGIN' AND details->>'success' = 'false';

-- Serves: /audit failed-logins, its users: failed logins in username order, so that every
-- username's count is one walk of the index (no sort, no hash), and the addresses of the users shown.
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_failed_login_username_idx
    ON audit_log (username, timestamp) INCLUDE (ip_address)
    WHERE action = 'LOGIN' AND details->>'success' = 'false';

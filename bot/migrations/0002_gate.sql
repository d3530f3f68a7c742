-- The gate for destructive commands: MFA enrollments, approvals, the operation lock, the audit trail.

CREATE TABLE mfa_enrollments (
    user_id text PRIMARY KEY,
    secret_encrypted bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz,
    -- The last accepted TOTP time step: a code of that step or an earlier one is a replay.
    last_used_step bigint NOT NULL DEFAULT 0,
    consecutive_failures integer NOT NULL DEFAULT 0,
    locked_until timestamptz
);

CREATE TABLE approvals (
    id uuid PRIMARY KEY,
    command text NOT NULL,
    arguments text NOT NULL,
    environment text NOT NULL,
    requester text NOT NULL,
    channel_id text,
    message_ts text,
    request_id text NOT NULL,
    plan jsonb NOT NULL,
    plan_fingerprint text NOT NULL,
    typed_word text,
    needs_second_approver boolean NOT NULL DEFAULT false,
    second_approver text,
    status text NOT NULL CHECK (status IN (
        'pending', 'awaiting_second', 'approved', 'executing', 'succeeded', 'failed',
        'refused', 'expired', 'cancelled', 'interrupted')),
    status_reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX approvals_status ON approvals (status, created_at DESC);

-- One destructive operation per environment. The fencing token only ever grows, so a holder that
-- lost the lock (it stalled past its lease) is refused when it tries to go on.
CREATE SEQUENCE op_lock_fencing;
CREATE TABLE op_locks (
    environment text PRIMARY KEY,
    fencing_token bigint NOT NULL,
    approval_id uuid,
    holder text NOT NULL,
    command text NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz NOT NULL
);

-- Append-only, hash-chained record of every destructive attempt and MFA event.
CREATE TABLE audit_trail (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL,
    request_id text,
    actor text,
    action text NOT NULL,
    command text,
    arguments text,
    channel_id text,
    decision text NOT NULL,
    outcome text,
    details jsonb NOT NULL DEFAULT '{}',
    prev_hash text NOT NULL,
    hash text NOT NULL
);

CREATE FUNCTION audit_trail_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_trail is append-only';
END;
$$;
CREATE TRIGGER audit_trail_no_update BEFORE UPDATE OR DELETE ON audit_trail
    FOR EACH ROW EXECUTE FUNCTION audit_trail_append_only();

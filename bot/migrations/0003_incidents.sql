-- Incidents: the record, its timeline, the Slack messages of alerts, and RCA drafts until filed.

CREATE TABLE incidents (
    id bigserial PRIMARY KEY,
    channel_id text NOT NULL,
    title text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    severity text NOT NULL CHECK (severity IN ('P1', 'P2', 'P3', 'P4')),
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    commander text,
    declared_by text NOT NULL,
    -- When the impact started: the alert's startsAt when declared from an alert, else the declaration.
    started_at timestamptz NOT NULL,
    declared_at timestamptz NOT NULL,
    resolved_at timestamptz,
    summary text,
    last_update text,
    last_update_at timestamptz,
    -- The pinned header message; its thread holds everything the bot does for the incident.
    header_ts text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);
CREATE INDEX incidents_channel_open ON incidents (channel_id, declared_at DESC) WHERE status = 'open';
CREATE INDEX incidents_channel ON incidents (channel_id, declared_at DESC);

CREATE TABLE incident_events (
    id bigserial PRIMARY KEY,
    incident_id bigint NOT NULL REFERENCES incidents (id),
    at timestamptz NOT NULL,
    kind text NOT NULL,
    actor text,
    text text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX incident_events_incident ON incident_events (incident_id, at, id);

-- One Slack message per alert fingerprint: repeats update it, resolution marks it resolved.
CREATE TABLE alert_messages (
    fingerprint text PRIMARY KEY,
    channel_id text NOT NULL,
    ts text NOT NULL,
    thread_ts text,
    status text NOT NULL CHECK (status IN ('firing', 'resolved')),
    alertname text NOT NULL,
    starts_at timestamptz NOT NULL,
    ends_at timestamptz,
    alert jsonb NOT NULL,
    external_url text,
    notifications integer NOT NULL DEFAULT 1,
    incident_id bigint REFERENCES incidents (id),
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);

-- The RCA draft of an incident, kept until filed and after: filing again updates the same issue.
CREATE TABLE rca_drafts (
    incident_id bigint PRIMARY KEY REFERENCES incidents (id),
    language text NOT NULL,
    title text NOT NULL,
    body text NOT NULL,
    rendered_at timestamptz NOT NULL,
    rendered_by text,
    preview_channel text,
    preview_ts text,
    issue_number integer,
    issue_url text,
    filed_at timestamptz,
    filed_by text,
    -- What was last sent to GitHub, to notice edits made on GitHub since.
    filed_body_sha256 text,
    -- A create whose outcome is unknown (timeout, 5xx): look for that issue before creating again.
    create_attempted_at timestamptz,
    last_error text
);

-- The incident's own workspace: a channel of its own (or the one it was declared in), roles beside
-- the commander, the stakeholders' announcement, bookmarks, update reminders, follow-ups, and what
-- the metrics need (when it first had a commander).

-- Where it was declared; `channel_id` is where it lives (its own channel, or that same one).
ALTER TABLE incidents ADD COLUMN origin_channel_id text;
UPDATE incidents SET origin_channel_id = channel_id;
ALTER TABLE incidents ALTER COLUMN origin_channel_id SET NOT NULL;
-- The name of its own channel (#inc-12-checkout-5xx), and the link to it posted where it was declared.
ALTER TABLE incidents ADD COLUMN channel_name text;
ALTER TABLE incidents ADD COLUMN origin_ts text;
CREATE INDEX incidents_origin_open ON incidents (origin_channel_id, declared_at DESC) WHERE status = 'open';

-- Roles beside the commander.
ALTER TABLE incidents ADD COLUMN comms_lead text;
ALTER TABLE incidents ADD COLUMN scribe text;

-- When it first had a commander (time to commander, MTTA): at the declaration when the declarer
-- took it, else at the first `/incident commander`.
ALTER TABLE incidents ADD COLUMN acknowledged_at timestamptz;
UPDATE incidents i SET acknowledged_at = coalesce(
    (SELECT min(e.at) FROM incident_events e WHERE e.incident_id = i.id AND e.kind = 'commander'),
    CASE WHEN i.commander IS NOT NULL THEN i.declared_at END);

-- The one message in the stakeholder channel, edited in place as the incident changes.
ALTER TABLE incidents ADD COLUMN announcement_channel text;
ALTER TABLE incidents ADD COLUMN announcement_ts text;

-- The incident channel's bookmarks, by what they are (runbook, graphs, rca): {"graphs": "Bk…"}.
ALTER TABLE incidents ADD COLUMN bookmarks jsonb NOT NULL DEFAULT '{}';

-- Update reminders: the last nudge. When the next one is due follows from the last update (or the
-- declaration), this, the severity and the settings; a replica claims a due reminder with one
-- conditional UPDATE of this column, so it is sent once whichever replica sees it first.
ALTER TABLE incidents ADD COLUMN last_reminded_at timestamptz;

-- Follow-ups: the actions an incident leaves behind, filed as GitHub issues with its RCA.
CREATE TABLE incident_followups (
    id bigserial PRIMARY KEY,
    incident_id bigint NOT NULL REFERENCES incidents (id),
    text text NOT NULL CHECK (length(text) BETWEEN 1 AND 2500),
    owner text,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    issue_number integer,
    issue_url text,
    issue_state text,
    -- What was last sent to GitHub, to notice edits made there since (they are then left alone).
    filed_body_sha256 text,
    -- A create whose outcome is unknown: look for that issue before creating again.
    create_attempted_at timestamptz,
    last_error text
);
CREATE INDEX incident_followups_incident ON incident_followups (incident_id, id);

-- The verdict of a command that has one (/health: healthy, degraded, down), for the App Home.
ALTER TABLE command_runs ADD COLUMN verdict text;

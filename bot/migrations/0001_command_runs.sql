-- Every command the bot ran, from Slack or the terminal: the bot's own record of what it did.
CREATE TABLE command_runs (
    id bigserial PRIMARY KEY,
    request_id text NOT NULL,
    command text NOT NULL,
    arguments text NOT NULL,
    source text NOT NULL CHECK (source IN ('slack', 'cli')),
    user_id text,
    channel_id text,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    outcome text
);
CREATE INDEX command_runs_started_at ON command_runs (started_at DESC);

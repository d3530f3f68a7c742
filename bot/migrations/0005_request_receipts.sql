-- Every request from Slack the bot accepted, by a name a replay or a retry of it shares: a request
-- is run once, whichever replica or connection it reaches. Kept for an hour (Slack's window is
-- five minutes, its retries come within the hour), then removed by the bot.
CREATE TABLE request_receipts (
    key text PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX request_receipts_received_at ON request_receipts (received_at);

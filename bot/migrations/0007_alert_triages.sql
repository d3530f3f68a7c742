-- When the bot last triaged an alert group by itself: once per group across replicas, and not again
-- within the cool-down (a flapping alert does not start ten triages).
CREATE TABLE alert_triages (
    group_key text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    fingerprint text NOT NULL
);

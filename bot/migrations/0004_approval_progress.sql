-- The steps of an executing plan, saved as they happen: after a restart, an interrupted operation
-- is reported with the state it reached.
ALTER TABLE approvals ADD COLUMN progress jsonb NOT NULL DEFAULT '[]';

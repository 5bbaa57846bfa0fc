-- Leases (issue 11): who runs a job and until when (Unix milliseconds); with `attempts`, a
-- run's fencing token. A stop asked for on any node, for whichever node runs the job.
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until INTEGER;
ALTER TABLE jobs ADD COLUMN stop_requested INTEGER NOT NULL DEFAULT 0;

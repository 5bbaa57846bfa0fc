-- Ended jobs whose payment is not settled yet: the scheduler looks for them every few
-- seconds, and without this index that meant reading every job ever run.
CREATE INDEX jobs_unsettled ON jobs (status) WHERE payment = 'pending';

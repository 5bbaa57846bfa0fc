-- An agreement's uploads are keyed by the module's hash too: two concurrent uploads for one
-- agreement each record their own row, and the job runs the one whose hash the keeper
-- recorded (issue 10, defect 8), never whichever row was written last. (SQLite: 0006.)
ALTER TABLE uploads DROP CONSTRAINT uploads_pkey;
ALTER TABLE uploads ADD PRIMARY KEY (agreement_id, algorithm_hash);

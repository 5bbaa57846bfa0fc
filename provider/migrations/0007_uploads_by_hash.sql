-- An agreement's uploads are keyed by the module's hash too: two concurrent uploads for one
-- agreement each record their own row, and the job runs the one whose hash the keeper
-- recorded (issue 10, defect 8), never whichever row was written last.
CREATE TABLE uploads_by_hash (
    agreement_id   TEXT NOT NULL,
    algorithm_hash TEXT NOT NULL,
    algorithm_did  TEXT,
    name           TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (agreement_id, algorithm_hash)
);
INSERT INTO uploads_by_hash (agreement_id, algorithm_hash, algorithm_did, name, created_at)
    SELECT agreement_id, algorithm_hash, algorithm_did, name, created_at FROM uploads;
DROP TABLE uploads;
ALTER TABLE uploads_by_hash RENAME TO uploads;

-- What settling a job and showing it need from its receipt, in columns of their own, so that
-- neither parses the stored receipt. A job without a receipt has none of them (NULL).
ALTER TABLE jobs ADD COLUMN receipt_hash TEXT;
ALTER TABLE jobs ADD COLUMN fuel_consumed INTEGER;
ALTER TABLE jobs ADD COLUMN outcome TEXT;

UPDATE jobs SET receipt_hash = json_extract(receipt, '$.receipt_hash'),
                fuel_consumed = json_extract(receipt, '$.fuel_consumed'),
                outcome = json_extract(receipt, '$.outcome')
 WHERE receipt IS NOT NULL;

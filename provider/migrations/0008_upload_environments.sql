-- Algorithms for an environment (issue 12): `environment` names it (NULL: the algorithm is a
-- module), `blob` is the blob store's name for what was kept (the module, or the files'
-- `tidepool-files-v1` archive); NULL means `algorithm_hash` (a module is its own blob).
ALTER TABLE uploads ADD COLUMN environment TEXT;
ALTER TABLE uploads ADD COLUMN blob TEXT;

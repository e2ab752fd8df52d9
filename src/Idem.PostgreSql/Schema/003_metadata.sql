-- Idem PostgreSQL store, schema version 3: record metadata.
--
-- Who claimed a key and for which operation, written by each claim so operators can find records
-- (`idem keys list --principal-hash H --route R`): the principal only as its hash (IdempotencyScope.ComputePrincipalHash,
-- 32 hex digits), never the raw principal; the operation as "METHOD /route/template" or a worker's scope.
-- Rows written before this version keep NULL: they replay as before and match no principal or route filter.
-- Not indexed: they are read by operators' listings only, and an index would make every claim write one more entry.

ALTER TABLE :"schema".:"table" ADD COLUMN IF NOT EXISTS principal_hash text;
ALTER TABLE :"schema".:"table" ADD COLUMN IF NOT EXISTS operation text;

-- Idem PostgreSQL store, schema version 2: recovery points.
--
-- The phases an owner finished (IdempotentExecution.RunPhaseAsync), recorded against its in-flight key so that the
-- owner taking over after a crash skips them. Opaque bytes encoded by the executor; NULL when none. Cleared when the
-- key completes or its record is replaced after retention; kept through a takeover.

ALTER TABLE :"schema".:"table" ADD COLUMN IF NOT EXISTS phases bytea;

-- Idem PostgreSQL store, schema version 1.
--
-- Applied by PostgreSqlIdempotencyMigrator / PostgreSqlIdempotencyStore.MigrateAsync (or `idem migrate`),
-- which substitutes the three psql-style variables below with quoted identifiers. To apply it by hand:
--
--   psql -v schema=public -v table=idem_records -v expires_index=idem_records_expires_at_idx -f 001_create.sql
--
-- Every statement is idempotent. All times are the server's clock (timestamptz); node clocks are never stored.

CREATE SCHEMA IF NOT EXISTS :"schema";

CREATE TABLE IF NOT EXISTS :"schema".:"table" (
    -- The scoped store key: a hash of (principal, method, route, Idempotency-Key). Never a raw credential.
    key              text        NOT NULL PRIMARY KEY,
    state            text        NOT NULL CHECK (state IN ('in_flight', 'completed')),
    -- SHA-256 of the request that claimed the key; a different request with the same key gets 422.
    fingerprint      text        NOT NULL,
    -- The current owner's token; completion, renewal and release are fenced by it.
    owner_token      uuid        NOT NULL,
    -- True when the current owner took the key over from an owner whose lease had expired.
    took_over        boolean     NOT NULL DEFAULT false,
    -- End of the owner's lease (meaningful while in flight); renewed by the owner's heartbeat.
    lease_expires_at timestamptz NOT NULL,
    -- Set by the first request that waits for this owner (on any node); only then do completion and release
    -- NOTIFY, so keys nobody waits for never touch the notification queue.
    has_waiters      boolean     NOT NULL DEFAULT false,
    -- End of retention; the row may be purged after it.
    expires_at       timestamptz NOT NULL,
    -- The stored response, once completed: status, headers as [name, value, name, value, ...] in the order
    -- sent (duplicates kept), the exact body bytes, and whether the body was too large to keep.
    status_code      integer,
    headers          text[],
    body             bytea,
    body_omitted     boolean     NOT NULL DEFAULT false
) WITH (fillfactor = 80); -- room for HOT lease renewals

-- Keeps the batched purge (DELETE ... WHERE expires_at <= now() LIMIT n) an index range scan.
CREATE INDEX IF NOT EXISTS :"expires_index" ON :"schema".:"table" (expires_at);

-- Idem PostgreSQL store, schema version 1.
--
-- Applied by PostgreSqlIdempotencyMigrator / PostgreSqlIdempotencyStore.MigrateAsync (or `idem migrate`),
-- which substitutes the three psql-style variables below with quoted identifiers. To apply it by hand:
--
--   psql -v schema=public -v table=idem_records -v purge_index=idem_records_purge_after_idx -f 001_create.sql
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
    -- End of retention; the record is gone for readers after it.
    expires_at       timestamptz NOT NULL,
    -- When purge may look at the row: set by each claim (to the end of the claim's retention) and only ever lowered
    -- by completion, so it never lies after expires_at for long. Purge finds rows by this column (indexed) and deletes
    -- them once expires_at has passed too. Completion moves expires_at but leaves this indexed column unchanged, so it is
    -- a HOT update: no new index entries, and the row stays on its page.
    purge_after      timestamptz NOT NULL,
    -- The stored response, once completed: status, headers as [name, value, name, value, ...] in the order
    -- sent (duplicates kept), the exact body bytes, and whether the body was too large to keep.
    status_code      integer,
    headers          text[],
    body             bytea,
    body_omitted     boolean     NOT NULL DEFAULT false
) WITH (fillfactor = 80); -- room for HOT completions and lease renewals

-- Keeps the batched purge (DELETE ... WHERE purge_after <= now() AND expires_at <= now() LIMIT n) an index range scan.
-- Deliberately not on expires_at: completion changes expires_at, and an index on it would make every completion a
-- non-HOT update (new entries in every index of the table).
CREATE INDEX IF NOT EXISTS :"purge_index" ON :"schema".:"table" (purge_after);

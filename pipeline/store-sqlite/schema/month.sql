-- Herald's embedded store, one file per calendar month (UTC): every row that ages. A row lives
-- in the month of its own time (a notification's creation, an event's or failure's time, an
-- inbox entry's creation, a ledger attempt's start). Retention deletes a month's file once all
-- of the month is older than the archive tier: no row is ever bulk-deleted.
CREATE TABLE IF NOT EXISTS notifications (
    tenant            TEXT    NOT NULL,
    notification_id   TEXT    NOT NULL,
    recipient_user_id TEXT    NOT NULL,
    category          TEXT    NOT NULL,
    priority          TEXT    NOT NULL,
    created_at_ms     INTEGER NOT NULL,
    PRIMARY KEY (tenant, notification_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS delivery_events (
    tenant            TEXT    NOT NULL,
    notification_id   TEXT    NOT NULL,
    result_id         TEXT    NOT NULL,
    recipient_user_id TEXT    NOT NULL,
    category          TEXT    NOT NULL,
    channel           TEXT,
    state             TEXT    NOT NULL,
    reason            TEXT,
    at_ms             INTEGER NOT NULL,
    PRIMARY KEY (tenant, notification_id, result_id)
) WITHOUT ROWID;

-- Final outcomes other than delivered, per tenant by time (ListFailures).
CREATE TABLE IF NOT EXISTS failures (
    tenant            TEXT    NOT NULL,
    at_ms             INTEGER NOT NULL,
    result_id         TEXT    NOT NULL,
    notification_id   TEXT    NOT NULL,
    recipient_user_id TEXT    NOT NULL,
    category          TEXT    NOT NULL,
    channel           TEXT,
    state             TEXT    NOT NULL,
    reason            TEXT,
    PRIMARY KEY (tenant, at_ms, result_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS inbox (
    tenant            TEXT    NOT NULL,
    recipient_user_id TEXT    NOT NULL,
    notification_id   TEXT    NOT NULL,
    category          TEXT    NOT NULL,
    title             TEXT    NOT NULL,
    body              TEXT    NOT NULL,
    action_url        TEXT,
    created_at_ms     INTEGER NOT NULL,
    delivered_at_ms   INTEGER NOT NULL,
    read_at_ms        INTEGER,
    -- Write order in this file (1, 2, ...), assigned under the write lock: what WatchInbox
    -- follows, so an entry written late is still new to a watch.
    feed_seq          INTEGER NOT NULL,
    PRIMARY KEY (tenant, recipient_user_id, notification_id)
) WITHOUT ROWID;
-- A page of an inbox is one ordered range scan of this index.
CREATE INDEX IF NOT EXISTS inbox_newest_first
    ON inbox (tenant, recipient_user_id, created_at_ms DESC, notification_id DESC);
CREATE INDEX IF NOT EXISTS inbox_unread
    ON inbox (tenant, recipient_user_id, created_at_ms) WHERE read_at_ms IS NULL;
-- WatchInbox follows write order (the next number is MAX + 1, read from the first index).
CREATE INDEX IF NOT EXISTS inbox_write_order ON inbox (feed_seq);
CREATE INDEX IF NOT EXISTS inbox_user_feed ON inbox (tenant, recipient_user_id, feed_seq);

-- One row per delivery, written before the provider call (state NULL) and completed after it.
-- A redelivered dispatch whose row is complete re-emits the recorded outcome instead of calling
-- the provider again; one whose row is incomplete crashed inside the provider window (resends).
-- Lookups read this month and the one before, so an attempt is remembered for at least a month.
CREATE TABLE IF NOT EXISTS delivery_ledger (
    delivery_id         TEXT PRIMARY KEY,
    state               TEXT,
    reason              TEXT,
    provider_message_id TEXT,
    begun_at_ms         INTEGER NOT NULL,
    at_ms               INTEGER,
    resends             INTEGER NOT NULL DEFAULT 0,
    abandoned           INTEGER NOT NULL DEFAULT 0  -- 1: the provider said "retry later"
) WITHOUT ROWID;

-- Like the ledger, remembered for at least a month.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant          TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    request_hash    TEXT    NOT NULL,
    notification_id TEXT    NOT NULL,
    at_ms           INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;

-- Herald's embedded store. Every statement is idempotent; applied at every start.
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
    tenant          TEXT    NOT NULL,
    notification_id TEXT    NOT NULL,
    result_id       TEXT    NOT NULL,
    channel         TEXT,
    state           TEXT    NOT NULL,
    reason          TEXT,
    at_ms           INTEGER NOT NULL,
    PRIMARY KEY (tenant, notification_id, result_id)
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
    read_at_ms        INTEGER,
    PRIMARY KEY (tenant, recipient_user_id, notification_id)
) WITHOUT ROWID;
-- A page of an inbox is one ordered range scan of this index.
CREATE INDEX IF NOT EXISTS inbox_newest_first
    ON inbox (tenant, recipient_user_id, created_at_ms DESC, notification_id DESC);

CREATE TABLE IF NOT EXISTS contacts (
    tenant  TEXT NOT NULL,
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    address TEXT NOT NULL,
    PRIMARY KEY (tenant, user_id, channel)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS opt_outs (
    tenant   TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    channel  TEXT NOT NULL,
    category TEXT NOT NULL, -- '*' for every category
    PRIMARY KEY (tenant, user_id, channel, category)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS templates (
    tenant      TEXT NOT NULL,
    template_id TEXT NOT NULL,
    locale      TEXT NOT NULL,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    action_url  TEXT,
    PRIMARY KEY (tenant, template_id, locale)
) WITHOUT ROWID;

-- One row per delivery, written before the provider call (state NULL) and completed after it.
-- A redelivered dispatch whose row is complete re-emits the recorded outcome instead of calling
-- the provider again; one whose row is incomplete crashed inside the provider window (resends).
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

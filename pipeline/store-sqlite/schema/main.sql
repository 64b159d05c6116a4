-- Herald's embedded store, main file: what does not age (recipients, templates) and the
-- ingress outbox (rows leave one by one when replayed). Idempotent; applied at every open.
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

-- Templates as stored before versions and channels: moved to template_versions below (version
-- 1, every channel) at the first open, then empty.
CREATE TABLE IF NOT EXISTS templates (
    tenant      TEXT NOT NULL,
    template_id TEXT NOT NULL,
    locale      TEXT NOT NULL,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    action_url  TEXT,
    PRIMARY KEY (tenant, template_id, locale)
) WITHOUT ROWID;

-- Every variant of every template: per locale, channel ('' = every channel without its own)
-- and version (1, 2, ...; old versions are kept, a request may pin one).
CREATE TABLE IF NOT EXISTS template_versions (
    tenant      TEXT    NOT NULL,
    template_id TEXT    NOT NULL,
    locale      TEXT    NOT NULL,
    channel     TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    title       TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    action_url  TEXT,
    PRIMARY KEY (tenant, template_id, locale, channel, version)
) WITHOUT ROWID;
INSERT OR IGNORE INTO template_versions
    SELECT tenant, template_id, locale, '', 1, title, body, action_url FROM templates;
DELETE FROM templates;

CREATE TABLE IF NOT EXISTS outbox (
    owner         TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    topic         TEXT    NOT NULL,
    key           BLOB    NOT NULL,
    payload       BLOB    NOT NULL,
    headers       BLOB    NOT NULL, -- OutboxRecord::headers_blob
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (owner, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outbox_oldest_first ON outbox (owner, created_at_ms, id);

-- Who replays each outbox: its own instance (renewing the lease while it lives) or, once the
-- lease has expired, a live instance that took it over.
CREATE TABLE IF NOT EXISTS outbox_leases (
    owner    TEXT    NOT NULL PRIMARY KEY,
    holder   TEXT    NOT NULL,
    until_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- API keys of calling backends: the secret's SHA-256 only (the secret is shown once, when made).
-- Rows are kept when revoked or expired, so `herald keys list` shows what happened to each.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id        TEXT    NOT NULL PRIMARY KEY,
    tenant        TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    scopes        TEXT    NOT NULL, -- comma-separated
    secret_hash   TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER,
    revoked_at_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS api_keys_by_tenant ON api_keys (tenant, created_at_ms, key_id);

-- Quiet hours of recipients: a daily window [start, end) in minutes of their local day.
CREATE TABLE IF NOT EXISTS quiet_hours (
    tenant       TEXT    NOT NULL,
    user_id      TEXT    NOT NULL,
    start_minute INTEGER NOT NULL,
    end_minute   INTEGER NOT NULL,
    time_zone    TEXT    NOT NULL,
    PRIMARY KEY (tenant, user_id)
) WITHOUT ROWID;

-- Notifications held for quiet hours, until released (rows leave one by one when released).
CREATE TABLE IF NOT EXISTS held (
    tenant            TEXT    NOT NULL,
    notification_id   TEXT    NOT NULL,
    release_at_ms     INTEGER NOT NULL,
    recipient_user_id TEXT    NOT NULL,
    payload           BLOB    NOT NULL,
    PRIMARY KEY (tenant, notification_id, release_at_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS held_by_release ON held (release_at_ms, tenant, notification_id);

-- Topic subscriptions: who receives a topic's broadcasts (expanded in user id order).
CREATE TABLE IF NOT EXISTS subscriptions (
    tenant  TEXT NOT NULL,
    topic   TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (tenant, topic, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS subscriptions_by_user ON subscriptions (tenant, user_id, topic);

//! The SQLite schema, as forward-only migrations tracked in `PRAGMA user_version`.

use rusqlite::Connection;

/// Each entry is one migration; never edit one that has shipped, append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE devices (
    id             INTEGER PRIMARY KEY,
    user_id        INTEGER NOT NULL,
    name           TEXT NOT NULL,
    token_hash     BLOB NOT NULL UNIQUE,
    created_at     INTEGER NOT NULL,
    last_active_at INTEGER NOT NULL
);
CREATE INDEX devices_by_user ON devices(user_id);
CREATE TABLE conversations (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL,
    title         TEXT,
    -- "low:high" user ids of a direct conversation, so a pair has exactly one.
    direct_key    TEXT UNIQUE,
    created_at    INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL,
    last_activity INTEGER NOT NULL,
    members_count INTEGER NOT NULL
);
-- Membership and the per-member pointers. A removed member keeps a row with left_seq set, so
-- they still receive the log up to the entry that removed them.
CREATE TABLE members (
    conversation_id INTEGER NOT NULL,
    user_id         INTEGER NOT NULL,
    role            TEXT NOT NULL,
    joined_seq      INTEGER NOT NULL,
    left_seq        INTEGER,
    joined_at       INTEGER NOT NULL,
    read_seq        INTEGER NOT NULL DEFAULT 0,
    delivered_seq   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members(user_id, conversation_id);
CREATE INDEX members_by_delivered ON members(conversation_id, delivered_seq);
CREATE INDEX members_by_read ON members(conversation_id, read_seq);
-- The log: written once per message, whatever the number of members.
CREATE TABLE messages (
    conversation_id  INTEGER NOT NULL,
    seq              INTEGER NOT NULL,
    message_id       INTEGER NOT NULL,
    sender_id        INTEGER NOT NULL,
    sender_device_id INTEGER,
    client_id        TEXT,
    ts               INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    body             TEXT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX messages_idempotency ON messages(sender_id, client_id) WHERE client_id IS NOT NULL;
CREATE TABLE device_cursors (
    device_id       INTEGER NOT NULL,
    conversation_id INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    PRIMARY KEY (device_id, conversation_id)
) WITHOUT ROWID;
"#,
    // 2: edits, deletes and reactions name their target, so "is this deleted?" and "its latest
    // edit" are index lookups and the log stays write-once.
    r#"
ALTER TABLE messages ADD COLUMN target_seq INTEGER;
CREATE INDEX messages_by_target ON messages(conversation_id, target_seq) WHERE target_seq IS NOT NULL;
"#,
    // 3: presence: when each user was last seen (written lazily), and whether they show it.
    r#"
ALTER TABLE users ADD COLUMN last_seen INTEGER;
ALTER TABLE users ADD COLUMN last_seen_visible INTEGER NOT NULL DEFAULT 1;
"#,
    // 4: every `ack` and `read` moved an entry in both pointer indexes, two more pages written per
    // pointer move; receipt counts scan the conversation's members (at most 1,024, contiguous
    // under the primary key) instead.
    r#"
DROP INDEX members_by_delivered;
DROP INDEX members_by_read;
"#,
    // 5: push notifications: per-member settings, do not disturb, each device's registration,
    // the push queue (one row per device and conversation) and the server's secrets.
    r#"
ALTER TABLE members ADD COLUMN muted_until INTEGER;
ALTER TABLE members ADD COLUMN notify TEXT NOT NULL DEFAULT 'all';
ALTER TABLE users ADD COLUMN dnd_until INTEGER;
CREATE TABLE push_registrations (
    device_id         INTEGER PRIMARY KEY,
    user_id           INTEGER NOT NULL,
    kind              TEXT NOT NULL,
    -- the endpoint (Web Push, UnifiedPush) or the device token (APNs, FCM)
    address           TEXT NOT NULL,
    p256dh            TEXT,
    auth              TEXT,
    sandbox           INTEGER NOT NULL DEFAULT 0,
    registered_at     INTEGER NOT NULL,
    last_success_at   INTEGER,
    last_error_at     INTEGER,
    last_error_status INTEGER,
    last_error_reason TEXT,
    invalidated_at    INTEGER,
    invalidation_told INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX push_registrations_by_user ON push_registrations(user_id);
-- seq NULL: idle, kept until window_end so a message within the window is merged, not pushed.
CREATE TABLE push_jobs (
    device_id       INTEGER NOT NULL,
    conversation_id INTEGER NOT NULL,
    seq             INTEGER,
    queued_at       INTEGER NOT NULL,
    merged          INTEGER NOT NULL DEFAULT 0,
    due_at          INTEGER NOT NULL,
    window_end      INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    PRIMARY KEY (device_id, conversation_id)
) WITHOUT ROWID;
CREATE INDEX push_jobs_due ON push_jobs(due_at) WHERE seq IS NOT NULL;
CREATE INDEX push_jobs_idle ON push_jobs(window_end) WHERE seq IS NULL;
CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"#,
    r#"
-- state: 0 pending, 1 ready, 2 doomed (the collector is removing its object), 3 removed (kept as a
-- tombstone for the daily budget and until every URL handed out has expired).
-- refs: messages referencing it; used: whether one ever did (then it goes as soon as none does).
CREATE TABLE media (
    media_id     INTEGER PRIMARY KEY,
    uploader_id  INTEGER NOT NULL,
    size         INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    sha256       BLOB NOT NULL,
    state        INTEGER NOT NULL DEFAULT 0,
    refs         INTEGER NOT NULL DEFAULT 0,
    used         INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
);
CREATE INDEX media_by_uploader ON media(uploader_id, created_at);
CREATE INDEX media_unreferenced ON media(created_at) WHERE refs = 0;
CREATE INDEX media_by_state ON media(state, created_at);
CREATE TABLE media_refs (
    media_id        INTEGER NOT NULL,
    conversation_id INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    PRIMARY KEY (media_id, conversation_id, seq)
) WITHOUT ROWID;
CREATE INDEX media_refs_by_entry ON media_refs(conversation_id, seq);
"#,
    r#"
-- End-to-end encryption: the key directory, device lists, the to-device queue, encrypted
-- conversations and their device epochs.
ALTER TABLE conversations ADD COLUMN encrypted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN device_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN device_list_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN identity TEXT;
ALTER TABLE devices ADD COLUMN to_device_seq INTEGER NOT NULL DEFAULT 0;
CREATE TABLE one_time_keys (
    device_id INTEGER NOT NULL,
    key_id    TEXT NOT NULL,
    key       TEXT NOT NULL,
    PRIMARY KEY (device_id, key_id)
) WITHOUT ROWID;
CREATE TABLE fallback_keys (
    device_id INTEGER PRIMARY KEY,
    key_id    TEXT NOT NULL,
    key       TEXT NOT NULL,
    used      INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE to_device (
    device_id        INTEGER NOT NULL,
    id               INTEGER NOT NULL,
    sender_user_id   INTEGER NOT NULL,
    sender_device_id INTEGER NOT NULL,
    payload          TEXT NOT NULL,
    PRIMARY KEY (device_id, id)
) WITHOUT ROWID;
CREATE TABLE to_device_sends (
    sender_device_id INTEGER NOT NULL,
    client_id        TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    PRIMARY KEY (sender_device_id, client_id)
) WITHOUT ROWID;
CREATE INDEX to_device_sends_by_age ON to_device_sends(sender_device_id, created_at);
"#,
];

pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied SQLite migration");
    }
    Ok(())
}

//! The PostgreSQL schema, as versioned forward-only migrations recorded in `schema_migrations`.
//!
//! Each migration runs in its own transaction under a transaction-scoped advisory lock, so
//! several nodes starting at once apply each migration exactly once: the others wait for the
//! lock, then see the version recorded and skip it.

use tokio_postgres::Client;

use parley_store::StoreError;

use crate::PgError;

use crate::PgResult as Result;

/// The key of the advisory lock that serializes migrations (the bytes of "parley-m").
const MIGRATION_LOCK: i64 = 0x7061_726c_6579_2d6d;

/// Each entry is one migration, numbered from 1; never edit one that has shipped, append a new
/// one. Migration 1 is the SQLite schema (its three migrations) in PostgreSQL terms, with the
/// log in 16 hash partitions (changing that number is a new migration that rewrites the table).
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id                BIGINT PRIMARY KEY,
    username          TEXT NOT NULL UNIQUE,
    display_name      TEXT NOT NULL,
    password_hash     TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    -- Presence: when the user was last seen (written lazily), and whether they show it.
    last_seen         BIGINT,
    last_seen_visible BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE TABLE devices (
    id             BIGINT PRIMARY KEY,
    user_id        BIGINT NOT NULL,
    name           TEXT NOT NULL,
    token_hash     BYTEA NOT NULL UNIQUE,
    created_at     BIGINT NOT NULL,
    last_active_at BIGINT NOT NULL
);
CREATE INDEX devices_by_user ON devices (user_id);
-- The rows updated in place all the time (counters, pointers, cursors) leave room on their
-- pages, so an update that touches no indexed column stays on the page (HOT).
CREATE TABLE conversations (
    id            BIGINT PRIMARY KEY,
    kind          TEXT NOT NULL,
    title         TEXT,
    -- "low:high" user ids of a direct conversation, so a pair has exactly one.
    direct_key    TEXT UNIQUE,
    created_at    BIGINT NOT NULL,
    -- The per-conversation counter: bumped in the transaction that inserts the entries, under
    -- this row's lock, so each conversation's log is gap-free across nodes.
    last_seq      BIGINT NOT NULL,
    last_activity BIGINT NOT NULL,
    members_count BIGINT NOT NULL
) WITH (fillfactor = 80);
-- Membership and the per-member pointers. A removed member keeps a row with left_seq set, so
-- they still receive the log up to the entry that removed them.
CREATE TABLE members (
    conversation_id BIGINT NOT NULL,
    user_id         BIGINT NOT NULL,
    role            TEXT NOT NULL,
    joined_seq      BIGINT NOT NULL,
    left_seq        BIGINT,
    joined_at       BIGINT NOT NULL,
    read_seq        BIGINT NOT NULL DEFAULT 0,
    delivered_seq   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
) WITH (fillfactor = 80);
-- No index on the pointers, so moving one is a HOT update (no index writes); receipt counts
-- scan the conversation's members, at most 1,024, through the primary key.
CREATE INDEX members_by_user ON members (user_id, conversation_id);
-- The log: written once per message, whatever the number of members, and hash-partitioned by
-- conversation so each partition (and its indexes) stays a fraction of the whole.
CREATE TABLE messages (
    conversation_id  BIGINT NOT NULL,
    seq              BIGINT NOT NULL,
    message_id       BIGINT NOT NULL,
    sender_id        BIGINT NOT NULL,
    sender_device_id BIGINT,
    client_id        TEXT,
    ts               BIGINT NOT NULL,
    kind             TEXT NOT NULL,
    body             TEXT NOT NULL,
    -- The entry an edit, delete or reaction refers to.
    target_seq       BIGINT,
    PRIMARY KEY (conversation_id, seq)
) PARTITION BY HASH (conversation_id);
DO $$
BEGIN
    FOR i IN 0..15 LOOP
        EXECUTE format(
            'CREATE TABLE messages_p%s PARTITION OF messages FOR VALUES WITH (MODULUS 16, REMAINDER %s)',
            lpad(i::text, 2, '0'), i);
    END LOOP;
END
$$;
CREATE INDEX messages_by_target ON messages (conversation_id, target_seq) WHERE target_seq IS NOT NULL;
-- Lets a starting node find the largest message id without scanning the log.
CREATE INDEX messages_by_id ON messages (message_id);
-- Idempotency. A unique index on a partitioned table must contain the partition key, and a
-- repeat of (sender, client_id) must find the original whatever conversation it names, so the
-- keys live in their own table, written in the same transaction as the entry.
CREATE TABLE idempotency (
    sender_id       BIGINT NOT NULL,
    client_id       TEXT NOT NULL,
    conversation_id BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    PRIMARY KEY (sender_id, client_id)
);
CREATE TABLE device_cursors (
    device_id       BIGINT NOT NULL,
    conversation_id BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    PRIMARY KEY (device_id, conversation_id)
) WITH (fillfactor = 80);
"#,
    // 2: push notifications: per-member settings, do not disturb, each device's registration,
    // the push queue (one row per device and conversation, claimed with SKIP LOCKED by any node)
    // and the server's secrets (the VAPID key, shared by every node).
    r#"
ALTER TABLE members ADD COLUMN muted_until BIGINT;
ALTER TABLE members ADD COLUMN notify TEXT NOT NULL DEFAULT 'all';
ALTER TABLE users ADD COLUMN dnd_until BIGINT;
CREATE TABLE push_registrations (
    device_id         BIGINT PRIMARY KEY,
    user_id           BIGINT NOT NULL,
    kind              TEXT NOT NULL,
    address           TEXT NOT NULL,
    p256dh            TEXT,
    auth              TEXT,
    sandbox           BOOLEAN NOT NULL DEFAULT FALSE,
    registered_at     BIGINT NOT NULL,
    last_success_at   BIGINT,
    last_error_at     BIGINT,
    last_error_status INTEGER,
    last_error_reason TEXT,
    invalidated_at    BIGINT,
    invalidation_told BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX push_registrations_by_user ON push_registrations(user_id);
CREATE TABLE push_jobs (
    device_id       BIGINT NOT NULL,
    conversation_id BIGINT NOT NULL,
    seq             BIGINT,
    queued_at       BIGINT NOT NULL,
    merged          INTEGER NOT NULL DEFAULT 0,
    due_at          BIGINT NOT NULL,
    window_end      BIGINT NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease_until     BIGINT NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    PRIMARY KEY (device_id, conversation_id)
) WITH (fillfactor = 80);
CREATE INDEX push_jobs_due ON push_jobs(due_at) WHERE seq IS NOT NULL;
CREATE INDEX push_jobs_idle ON push_jobs(window_end) WHERE seq IS NULL;
CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
"#,
    // Media records (the bytes live in the media store) and the messages referencing them.
    r#"
CREATE TABLE media (
    media_id     BIGINT PRIMARY KEY,
    uploader_id  BIGINT NOT NULL,
    size         BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    sha256       BYTEA NOT NULL,
    -- 0 pending, 1 ready, 2 doomed (the collector is removing its object), 3 removed (a tombstone
    -- kept for the daily budget and until every URL handed out has expired)
    state        SMALLINT NOT NULL DEFAULT 0,
    refs         INTEGER NOT NULL DEFAULT 0,
    used         BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   BIGINT NOT NULL
) WITH (fillfactor = 90);
CREATE INDEX media_by_uploader ON media(uploader_id, created_at);
CREATE INDEX media_unreferenced ON media(created_at) WHERE refs = 0;
CREATE INDEX media_by_state ON media(state, created_at);
CREATE TABLE media_refs (
    media_id        BIGINT NOT NULL,
    conversation_id BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    PRIMARY KEY (media_id, conversation_id, seq)
);
CREATE INDEX media_refs_by_entry ON media_refs(conversation_id, seq);
"#,
    // End-to-end encryption: the key directory, device lists, the to-device queue, encrypted
    // conversations and their device epochs.
    r#"
ALTER TABLE conversations ADD COLUMN encrypted BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE conversations ADD COLUMN device_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN device_list_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN identity TEXT;
ALTER TABLE devices ADD COLUMN to_device_seq BIGINT NOT NULL DEFAULT 0;
CREATE TABLE one_time_keys (
    device_id BIGINT NOT NULL,
    key_id    TEXT NOT NULL,
    key       TEXT NOT NULL,
    PRIMARY KEY (device_id, key_id)
);
CREATE TABLE fallback_keys (
    device_id BIGINT PRIMARY KEY,
    key_id    TEXT NOT NULL,
    key       TEXT NOT NULL,
    used      BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE to_device (
    device_id        BIGINT NOT NULL,
    id               BIGINT NOT NULL,
    sender_user_id   BIGINT NOT NULL,
    sender_device_id BIGINT NOT NULL,
    payload          TEXT NOT NULL,
    PRIMARY KEY (device_id, id)
);
CREATE TABLE to_device_sends (
    sender_device_id BIGINT NOT NULL,
    client_id        TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (sender_device_id, client_id)
);
CREATE INDEX to_device_sends_by_age ON to_device_sends(sender_device_id, created_at);
"#,
];

/// The schema version this build expects.
pub(crate) fn latest() -> i32 {
    MIGRATIONS.len() as i32
}

/// Applies every migration the database does not have yet, each in its own transaction.
pub(crate) async fn migrate(client: &mut Client) -> Result<()> {
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    INTEGER PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await?;
        let done = tx.query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[&version]).await?.is_some();
        if done {
            tx.commit().await?;
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&version]).await?;
        tx.commit().await?;
        tracing::info!(version, "applied PostgreSQL migration");
    }
    let newest = current(client).await?;
    if newest > latest() {
        tracing::warn!(database = newest, binary = latest(), "the database schema is newer than this binary");
    }
    Ok(())
}

/// The newest migration applied to the database (0 for an empty database).
pub(crate) async fn current(client: &Client) -> Result<i32> {
    let exists: bool =
        client.query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[]).await?.try_get(0)?;
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = client.query_one("SELECT max(version) FROM schema_migrations", &[]).await?.try_get(0)?;
    Ok(v.unwrap_or(0))
}

/// Refuses to run on a database that lacks migrations this build needs.
pub(crate) async fn check(client: &Client) -> Result<()> {
    let have = current(client).await?;
    if have < latest() {
        return Err(PgError::Store(StoreError::Backend(format!(
            "the database schema is at version {have}, this build needs {}: run `parley migrate`",
            latest()
        ))));
    }
    Ok(())
}

//! The embedded backend: SQLite in WAL mode. One writer thread does group commit
//! ([`writer`]); reads run on a small pool of read-only connections, which WAL lets proceed
//! while the writer commits.

mod accounts;
mod conversations;
mod e2ee;
mod media;
mod messages;
mod push;
mod schema;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use parley_core::ids::*;
use parley_core::model::*;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio::sync::{Semaphore, mpsc, oneshot};

use parley_core::media::Media;
use parley_core::push::{MemberSettings, PushAddress, PushKind, PushRegistration, SettingsPatch};
use parley_store::e2ee::{ClaimedKey, DeviceList, KeyUpload, ToDeviceMessage, ToDeviceOut};
use parley_store::{
    Backlog, EventSender, HistoryQuery, NewMessage, PushDone, PushJob, Result, SendOutcome, Store, StoreError, Ticket,
    WriterStats,
};
use writer::{Finish, Job, Msg, RunFn, WriteCtx};

/// Read connections in the pool; reads beyond this many wait for one.
const READERS: usize = 4;
/// Jobs queued for the writer before callers wait (backpressure, not unbounded memory).
const WRITE_QUEUE: usize = 16 * 1024;

pub struct SqliteStore {
    stats: Arc<WriterStats>,
    jobs: mpsc::Sender<Msg>,
    readers: Arc<Mutex<Vec<Connection>>>,
    read_permits: Arc<Semaphore>,
}

/// An error inside the backend: the outcome a caller gets ([`StoreError`]), or an SQLite error
/// that becomes one at the trait's edge.
#[derive(Debug)]
pub(crate) enum SqlError {
    Store(StoreError),
    Sqlite(rusqlite::Error),
}

/// What the backend's internals return; the trait's methods turn it into [`StoreError`].
pub(crate) type SqlResult<T> = std::result::Result<T, SqlError>;

impl From<StoreError> for SqlError {
    fn from(e: StoreError) -> Self {
        SqlError::Store(e)
    }
}

impl From<parley_core::rules::Refusal> for SqlError {
    fn from(r: parley_core::rules::Refusal) -> Self {
        SqlError::Store(r.into())
    }
}

impl From<rusqlite::Error> for SqlError {
    fn from(e: rusqlite::Error) -> Self {
        SqlError::Sqlite(e)
    }
}

impl From<SqlError> for StoreError {
    fn from(e: SqlError) -> Self {
        let e = match e {
            SqlError::Store(e) => return e,
            SqlError::Sqlite(e) => e,
        };
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

fn gone() -> StoreError {
    StoreError::Unavailable("the store is shutting down".into())
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "cache_size", -32_000)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Every commit empties the page cache of every other connection; mapped pages are read in
    // place instead of being copied back in by `pread`.
    conn.pragma_update(None, "mmap_size", 256 * 1024 * 1024)?;
    // Every statement the writer runs stays prepared (rusqlite keeps 16 by default; the writer
    // runs more than that, and a statement pushed out is parsed again on its next use).
    conn.set_prepared_statement_cache_capacity(128);
    Ok(())
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database `parley.db` in `dir`. Committed
    /// messages and pointer changes are published to `events`.
    pub fn open(dir: &Path, node_id: u16, events: EventSender) -> Result<SqliteStore> {
        Ok(SqliteStore::open_at(dir, node_id, events)?)
    }

    fn open_at(dir: &Path, node_id: u16, events: EventSender) -> SqlResult<SqliteStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("parley.db");
        let mut conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        configure(&conn)?;
        // A longer WAL between checkpoints lets the hot pages (conversation rows, pointers) be
        // copied back once for many commits instead of once per ~1,000 pages written.
        conn.pragma_update(None, "wal_autocheckpoint", 8000)?;
        schema::migrate(&mut conn)?;
        let ids = IdGen::new(node_id);
        for sql in [
            "SELECT max(id) FROM users",
            "SELECT max(id) FROM devices",
            "SELECT max(id) FROM conversations",
            "SELECT max(message_id) FROM messages",
            "SELECT max(media_id) FROM media",
        ] {
            let max: Option<i64> = conn.query_row(sql, [], |r| r.get(0))?;
            ids.observe(max.unwrap_or(0));
        }
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r =
                Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
            configure(&r)?;
            readers.push(r);
        }
        let (jobs, rx) = mpsc::channel(WRITE_QUEUE);
        let lazy = Connection::open(&path)?;
        lazy.pragma_update(None, "synchronous", "NORMAL")?;
        configure(&lazy)?;
        let stats = Arc::new(WriterStats::default());
        let push_live: bool =
            conn.query_row("SELECT EXISTS (SELECT 1 FROM push_registrations WHERE invalidated_at IS NULL)", [], |r| {
                r.get(0)
            })?;
        let conns = writer::WriteConns { push_live: std::cell::Cell::new(push_live), durable: conn, lazy };
        writer::spawn(conns, ids, rx, events, stats.clone())
            .map_err(|e| StoreError::Backend(format!("cannot start the writer: {e}")))?;
        Ok(SqliteStore {
            stats,
            jobs,
            readers: Arc::new(Mutex::new(readers)),
            read_permits: Arc::new(Semaphore::new(READERS)),
        })
    }

    /// Queues `f` for the writer and waits for its batch to commit.
    async fn write<T: Send + 'static>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut WriteCtx<'_>) -> SqlResult<T> + Send + 'static,
    ) -> Result<T> {
        self.submit(durable, f).await?.wait().await
    }

    /// Queues `f` for the writer (waiting only for room in the queue); the ticket resolves
    /// when its batch has committed. Jobs run in the order they were queued.
    async fn submit<T: Send + 'static>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut WriteCtx<'_>) -> SqlResult<T> + Send + 'static,
    ) -> Result<Ticket<T>> {
        let (tx, rx) = oneshot::channel();
        let run: RunFn = Box::new(move |ctx| {
            let r = f(ctx);
            let ok = r.is_ok();
            let finish: Finish = Box::new(move |commit| {
                let _ = tx.send(commit.and(r.map_err(StoreError::from)));
            });
            (finish, ok)
        });
        self.jobs.send(Msg::Job(Job { durable, run })).await.map_err(|_| gone())?;
        Ok(Ticket::new(rx))
    }

    /// Runs `f` on a pooled read connection off the async threads.
    async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> SqlResult<T> + Send + 'static,
    ) -> Result<T> {
        let permit = self.read_permits.clone().acquire_owned().await.map_err(|_| gone())?;
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.lock().unwrap_or_else(|e| e.into_inner()).pop().expect("a permit guarantees a connection");
            let r = f(&conn);
            pool.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
            drop(permit);
            r.map_err(StoreError::from)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, username: &str, display_name: &str, password_hash: &str) -> Result<User> {
        let (u, d, h) = (username.to_owned(), display_name.to_owned(), password_hash.to_owned());
        self.write(true, move |ctx| accounts::create_user(ctx, &u, &d, &h)).await
    }

    async fn create_accounts(&self, accounts: Vec<NewAccount>) -> Result<Vec<(User, Device)>> {
        self.write(true, move |ctx| accounts::create_accounts(ctx, accounts)).await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        self.query(move |c| accounts::user(c, id)).await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let u = username.to_owned();
        self.query(move |c| Ok(accounts::credentials(c, &u)?.map(|c| c.user))).await
    }

    async fn user_credentials(&self, username: &str) -> Result<Option<UserCredentials>> {
        let u = username.to_owned();
        self.query(move |c| accounts::credentials(c, &u)).await
    }

    async fn presence_records(&self, users: &[UserId]) -> Result<Vec<PresenceRecord>> {
        let users = users.to_vec();
        self.query(move |c| accounts::presence_records(c, &users)).await
    }

    async fn set_last_seen(&self, user: UserId, at: i64) -> Result<()> {
        self.write(false, move |ctx| accounts::set_last_seen(ctx, user, at)).await
    }

    async fn set_last_seen_visible(&self, user: UserId, visible: bool) -> Result<()> {
        self.write(true, move |ctx| accounts::set_last_seen_visible(ctx, user, visible)).await
    }

    async fn create_device(&self, user_id: UserId, name: &str, token_hash: [u8; 32]) -> Result<Device> {
        let n = name.to_owned();
        self.write(true, move |ctx| accounts::create_device(ctx, user_id, &n, &token_hash)).await
    }

    async fn device_by_token(&self, token_hash: [u8; 32]) -> Result<Option<Device>> {
        self.query(move |c| accounts::device_by_token(c, &token_hash)).await
    }

    async fn devices(&self, user_id: UserId) -> Result<Vec<Device>> {
        self.query(move |c| accounts::devices(c, user_id)).await
    }

    async fn touch_device(&self, device_id: DeviceId, at: i64) -> Result<()> {
        self.write(false, move |ctx| accounts::touch_device(ctx, device_id, at)).await
    }

    async fn delete_device(&self, user_id: UserId, device_id: DeviceId) -> Result<bool> {
        self.write(true, move |ctx| accounts::delete_device(ctx, user_id, device_id)).await
    }

    async fn create_direct(&self, a: UserId, b: UserId, encrypted: bool) -> Result<(ConversationId, bool)> {
        self.write(true, move |ctx| conversations::create_direct(ctx, a, b, encrypted)).await
    }

    async fn conversation(
        &self,
        user: UserId,
        id: ConversationId,
        with_members: bool,
    ) -> Result<Option<ConversationView>> {
        self.query(move |c| conversations::view(c, user, id, with_members)).await
    }

    async fn conversation_views(
        &self,
        id: ConversationId,
        users: &[UserId],
        with_members: bool,
    ) -> Result<Vec<(UserId, ConversationView)>> {
        let users = users.to_vec();
        self.query(move |c| conversations::views(c, id, &users, with_members)).await
    }

    async fn conversations(&self, user: UserId) -> Result<Vec<ConversationView>> {
        self.query(move |c| conversations::list(c, user)).await
    }

    async fn create_group(
        &self,
        creator: UserId,
        title: &str,
        member_ids: &[UserId],
        encrypted: bool,
    ) -> Result<ConversationId> {
        let (title, members) = (title.to_owned(), member_ids.to_vec());
        self.write(true, move |ctx| conversations::create_group(ctx, creator, &title, &members, encrypted)).await
    }

    async fn contacts_among(&self, user: UserId, candidates: &[UserId]) -> Result<Vec<UserId>> {
        let candidates = candidates.to_vec();
        self.query(move |c| conversations::contacts_among(c, user, &candidates)).await
    }

    async fn member_windows(&self, id: ConversationId) -> Result<Vec<MemberWindow>> {
        self.query(move |c| conversations::member_windows(c, id)).await
    }

    async fn set_title(&self, actor: UserId, id: ConversationId, title: &str) -> Result<()> {
        let title = title.to_owned();
        self.write(true, move |ctx| conversations::set_title(ctx, actor, id, &title)).await
    }

    async fn add_members(&self, actor: UserId, id: ConversationId, user_ids: &[UserId]) -> Result<()> {
        let users = user_ids.to_vec();
        self.write(true, move |ctx| conversations::add_members(ctx, actor, id, &users)).await
    }

    async fn remove_member(&self, actor: UserId, id: ConversationId, user: UserId) -> Result<()> {
        self.write(true, move |ctx| conversations::remove_member(ctx, actor, id, user)).await
    }

    async fn set_role(&self, actor: UserId, id: ConversationId, user: UserId, role: Role) -> Result<()> {
        self.write(true, move |ctx| conversations::set_role(ctx, actor, id, user, role)).await
    }

    async fn enqueue_send(&self, msg: NewMessage) -> Result<Ticket<SendOutcome>> {
        self.submit(true, move |ctx| messages::send(ctx, msg)).await
    }

    async fn history(&self, user: UserId, id: ConversationId, q: HistoryQuery) -> Result<Vec<Message>> {
        self.query(move |c| messages::history(c, user, id, q)).await
    }

    async fn backlog(&self, device: DeviceId, user: UserId) -> Result<Vec<Backlog>> {
        self.query(move |c| messages::backlog(c, device, user)).await
    }

    async fn log_range(&self, id: ConversationId, after_seq: Seq, upto_seq: Seq, limit: u32) -> Result<Vec<Message>> {
        self.query(move |c| messages::range(c, id, after_seq.0, upto_seq.0, limit)).await
    }

    async fn enqueue_ack(&self, device: DeviceId, user: UserId, id: ConversationId, seq: Seq) -> Result<Ticket<()>> {
        self.submit(false, move |ctx| messages::ack(ctx, device, user, id, seq)).await
    }

    async fn enqueue_read(&self, user: UserId, id: ConversationId, seq: Seq) -> Result<Ticket<()>> {
        self.submit(false, move |ctx| messages::read(ctx, user, id, seq)).await
    }

    async fn receipts(&self, user: UserId, id: ConversationId, seq: Seq) -> Result<ReceiptSummary> {
        self.query(move |c| messages::receipts(c, user, id, seq)).await
    }

    async fn set_settings(
        &self,
        user: UserId,
        id: ConversationId,
        patch: SettingsPatch,
    ) -> Result<Option<MemberSettings>> {
        self.write(true, move |ctx| push::set_settings(ctx, user, id, patch)).await
    }

    async fn set_dnd(&self, user: UserId, until: Option<i64>) -> Result<()> {
        self.write(true, move |ctx| push::set_dnd(ctx, user, until)).await
    }

    async fn dnd_until(&self, user: UserId) -> Result<Option<i64>> {
        self.query(move |c| push::dnd_until(c, user)).await
    }

    async fn set_push(
        &self,
        device: DeviceId,
        user: UserId,
        kind: PushKind,
        address: PushAddress,
    ) -> Result<PushRegistration> {
        self.write(true, move |ctx| push::set_push(ctx, device, user, kind, address)).await
    }

    async fn delete_push(&self, device: DeviceId) -> Result<bool> {
        self.write(true, move |ctx| push::delete_push(ctx, device)).await
    }

    async fn push_registration(&self, device: DeviceId) -> Result<Option<PushRegistration>> {
        self.query(move |c| push::registration_of(c, device)).await
    }

    async fn take_push_invalidated(&self, device: DeviceId) -> Result<Option<PushKind>> {
        self.write(true, move |ctx| push::take_invalidated(ctx, device)).await
    }

    async fn claim_pushes(&self, node: &str, now: i64, lease_ms: i64, limit: u32) -> Result<Vec<PushJob>> {
        let node = node.to_owned();
        // Lazily durable: a lease lost to a crash only makes the push due again at once.
        self.write(false, move |ctx| push::claim(ctx, &node, now, lease_ms, limit)).await
    }

    async fn next_push_due(&self) -> Result<Option<i64>> {
        self.query(push::next_due).await
    }

    async fn finish_pushes(&self, done: Vec<PushDone>) -> Result<()> {
        self.write(true, move |ctx| push::finish(ctx, done)).await
    }

    async fn release_pushes(&self, node: &str) -> Result<()> {
        let node = node.to_owned();
        self.write(true, move |ctx| push::release(ctx, &node)).await
    }

    async fn secret(&self, name: &str, fresh: Vec<u8>) -> Result<Vec<u8>> {
        let name = name.to_owned();
        self.write(true, move |ctx| push::secret(ctx, &name, fresh)).await
    }

    async fn put_keys(&self, user: UserId, device: DeviceId, keys: KeyUpload) -> Result<u32> {
        self.write(true, move |ctx| e2ee::put_keys(ctx, user, device, keys)).await
    }

    async fn has_identity(&self, device: DeviceId) -> Result<bool> {
        self.query(move |c| {
            Ok(c.prepare_cached("SELECT identity IS NOT NULL FROM devices WHERE id = ?1")?
                .query_row([device.0], |r| r.get(0))
                .optional()?
                .unwrap_or(false))
        })
        .await
    }

    async fn key_counts(&self, device: DeviceId) -> Result<(u32, bool)> {
        self.query(move |c| e2ee::key_counts(c, device)).await
    }

    async fn claim_keys(&self, claimer: UserId, devices: Vec<(UserId, DeviceId)>) -> Result<Vec<ClaimedKey>> {
        self.write(true, move |ctx| e2ee::claim(ctx, claimer, devices)).await
    }

    async fn co_members(&self, user: UserId) -> Result<Vec<UserId>> {
        self.query(move |c| e2ee::co_members(c, user)).await
    }

    async fn device_list(&self, viewer: UserId, user: UserId) -> Result<Option<DeviceList>> {
        self.query(move |c| e2ee::device_list(c, viewer, user)).await
    }

    async fn queue_to_device(
        &self,
        sender: UserId,
        device: DeviceId,
        client_id: String,
        messages: Vec<ToDeviceOut>,
    ) -> Result<()> {
        self.write(true, move |ctx| e2ee::queue(ctx, sender, device, &client_id, messages)).await
    }

    async fn to_device_after(&self, device: DeviceId, after_id: i64, limit: u32) -> Result<Vec<ToDeviceMessage>> {
        self.query(move |c| e2ee::after(c, device, after_id, limit)).await
    }

    async fn ack_to_device(&self, device: DeviceId, up_to_id: i64) -> Result<()> {
        self.write(false, move |ctx| e2ee::ack(ctx, device, up_to_id)).await
    }

    async fn create_media(&self, uploader: UserId, size: u64, content_type: &str, sha256: [u8; 32]) -> Result<Media> {
        let ct = content_type.to_owned();
        self.write(true, move |ctx| media::create(ctx, uploader, size, &ct, sha256)).await
    }

    async fn media(&self, id: MediaId) -> Result<Option<Media>> {
        self.query(move |c| media::get(c, id)).await
    }

    async fn media_ready(&self, id: MediaId) -> Result<bool> {
        self.write(true, move |ctx| media::ready(ctx, id)).await
    }

    async fn doom_upload(&self, uploader: UserId, id: MediaId) -> Result<bool> {
        self.write(true, move |ctx| media::doom_upload(ctx, uploader, id)).await
    }

    async fn media_visible(&self, user: UserId, id: MediaId) -> Result<bool> {
        self.query(move |c| media::visible(c, user, id)).await
    }

    async fn media_usage(&self, user: UserId, since: i64) -> Result<parley_store::media::MediaUsage> {
        self.query(move |c| media::usage(c, user, since)).await
    }

    async fn doom_media(&self, orphan_before: i64, limit: u32) -> Result<Vec<MediaId>> {
        self.write(true, move |ctx| media::doom(ctx, orphan_before, limit)).await
    }

    async fn forget_media(&self, ids: &[MediaId]) -> Result<()> {
        let ids = ids.to_vec();
        self.write(true, move |ctx| media::forget(ctx, &ids)).await
    }

    async fn media_tombstones(&self, before: i64, limit: u32) -> Result<Vec<MediaId>> {
        self.query(move |c| media::tombstones(c, before, limit)).await
    }

    async fn purge_media(&self, ids: &[MediaId]) -> Result<()> {
        let ids = ids.to_vec();
        self.write(true, move |ctx| media::purge(ctx, &ids)).await
    }

    fn writer_stats(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }

    async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Msg::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

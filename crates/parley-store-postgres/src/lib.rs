//! The cluster backend: PostgreSQL. Same promises and same semantics as the SQLite backend,
//! checked by the same conformance suite; several nodes may share one database.
//!
//! One writer task per node does group commit ([`writer`]): it drains the queued jobs and runs
//! them in one transaction, sends and pointer moves as a few multi-row statements per batch
//! rather than a round trip each. Reads go through a small `deadpool-postgres` pool. The log is
//! hash-partitioned by conversation; see [`schema`].
//!
//! `PgStore` keeps every promise of the `Store` trait with the same
//! semantics and events as SQLite, and lets several nodes share one database.
//!
//! - **Schema** (`schema.rs`): the SQLite tables in PostgreSQL terms. `messages` is partitioned by
//!   `HASH (conversation_id)` into 16 partitions, primary key `(conversation_id, seq)`, with indexes
//!   on `(conversation_id, target_seq)` and `message_id` (a starting node reads the largest id from
//!   it). A unique index on a partitioned table must contain the partition key, and a repeated
//!   `(sender, client_id)` must find its original whatever conversation it names, so idempotency
//!   keys live in their own table `idempotency (sender_id, client_id) → (conversation_id, seq)`,
//!   written in the transaction that writes the entry. Rows updated in place all the time
//!   (`conversations`, `members`, `device_cursors`) have `fillfactor = 80` and no index on the
//!   updated columns, so those updates are HOT.
//! - **Seq**: `conversations.last_seq` is the counter, bumped in the transaction that inserts the
//!   entries, under the row's lock. Every write that appends to a conversation or changes its
//!   members locks that row first (`SELECT … FOR UPDATE`, in id order when there are several),
//!   so membership and `last_seq` cannot change under a node before it commits, and logs stay
//!   gap-free across nodes.
//! - **Group commit** (`writer.rs`): jobs are data (`Op`), queued to one writer task per node that
//!   drains up to 2,048 into one transaction, like the SQLite writer (lazy-only batches wait up to
//!   4 ms for a durable job; busy writers gather a little longer). A run of plain sends and pointer
//!   moves costs two pipelined round trips whatever its length (`messages::segment`): one locks the
//!   conversations, finds repeats and reads the senders' windows; seqs are then counted in memory;
//!   one writes the counters, the rows (`unnest` arrays) and the idempotency keys. Other jobs
//!   (groups, accounts, edits/deletes/reactions) run one by one, each in a savepoint. Cursor,
//!   pointer and activity updates are coalesced per batch and written at its end. Durable means
//!   `COMMIT` returned with the server's `synchronous_commit` (on, or stronger); batches holding
//!   only lazy jobs use `SET LOCAL synchronous_commit = off`. Events are published after the
//!   commit, before callers are answered.
//! - **Retries**: because jobs are data, a batch can run again: after a deadlock or serialization
//!   failure, a connection lost before `COMMIT`, or two nodes storing the same key (the rerun finds
//!   the original). If a multi-row statement fails for any other reason, the batch reruns job by
//!   job, so the error stays with its job. A connection lost during `COMMIT` leaves the outcome
//!   unknown: callers get `Unavailable` and may retry (sends are idempotent).
//! - **Connections**: the writer reconnects with a backoff (100 ms doubling to 5 s); while it cannot,
//!   its jobs are answered `Unavailable` at once, never left waiting. Reads use a
//!   `deadpool-postgres` pool of 8, which drops closed connections. TCP keepalives and a 10 s
//!   `tcp_user_timeout` notice a vanished server.
//! - **Nodes**: ids are Snowflakes from `parley-core` with the node's `node_id` (0–1023), which must
//!   differ per node sharing a database. The writer holds a session advisory lock on its node id, so
//!   a second live node with the same id is refused at start; a stale session of the same process
//!   (after a network failure) is taken over.
//! - **Migrations**: versioned and forward-only in `schema_migrations`, each in its own transaction
//!   under `pg_advisory_xact_lock`, so nodes starting at once apply each exactly once.
//!   `PgStore::migrate(url)` runs them (for `parley migrate`); `PgStore::connect(url, node_id,
//!   run_migrations, events)` runs them first or, told not to, refuses a database that is behind.

mod accounts;
mod conversations;
mod e2ee;
mod media;
mod messages;
mod push;
mod schema;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use parley_core::ids::*;
use parley_core::media::Media;
use parley_core::model::*;
use parley_core::push::{MemberSettings, PushAddress, PushKind, PushRegistration, SettingsPatch};
use parley_store::e2ee::{ClaimedKey, DeviceList, KeyUpload, ToDeviceMessage, ToDeviceOut};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use parley_store::{
    Backlog, EventSender, HistoryQuery, NewMessage, PushDone, PushJob, Result, SendOutcome, Store, StoreError, Ticket,
    WriterStats,
};
use writer::{Msg, Op, Reply};

/// Read connections in the pool; reads beyond this many wait for one.
const READERS: usize = 8;
/// Jobs queued for the writer before callers wait (backpressure, not unbounded memory).
const WRITE_QUEUE: usize = 16 * 1024;
/// How long opening a connection may take before the store reports itself unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PgStore {
    stats: Arc<WriterStats>,
    jobs: mpsc::Sender<Msg>,
    pool: Pool,
    /// Shared with the writer: media records are created outside it.
    ids: Arc<IdGen>,
}

/// An error inside the backend: either the outcome a caller gets ([`StoreError`]), or a
/// database error that the writer first looks at (a deadlock retries the batch, say).
#[derive(Debug)]
pub(crate) enum PgError {
    Store(StoreError),
    Db(tokio_postgres::Error),
    /// Another live node holds this node number (see [`ConnectError::NodeTaken`]).
    NodeTaken(u16),
}

/// Why [`PgStore::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Another live node connected to this database holds the node number; a named node may try
    /// the next one.
    #[error("node_id {0} is in use by another node connected to this database; give each node its own node_id")]
    NodeTaken(u16),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PgError> for ConnectError {
    fn from(e: PgError) -> Self {
        match e {
            PgError::NodeTaken(n) => ConnectError::NodeTaken(n),
            e => ConnectError::Store(e.into()),
        }
    }
}

pub(crate) type PgResult<T> = std::result::Result<T, PgError>;

impl From<StoreError> for PgError {
    fn from(e: StoreError) -> Self {
        PgError::Store(e)
    }
}

impl From<parley_core::rules::Refusal> for PgError {
    fn from(r: parley_core::rules::Refusal) -> Self {
        PgError::Store(r.into())
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Db(e)
    }
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Store(e) => e,
            PgError::Db(e) => db_error(e),
            e @ PgError::NodeTaken(_) => StoreError::Unavailable(ConnectError::from(e).to_string()),
        }
    }
}

/// True when the error says the connection (or the server) is gone, rather than anything about
/// the statement: the work may be retried on a new connection.
pub(crate) fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if let Some(code) = e.code() {
        let c = code.code();
        return c.starts_with("08") // connection exception
            || c.starts_with("53") // insufficient resources (too many connections, ...)
            || c.starts_with("57P"); // admin shutdown, crash shutdown, cannot connect now
    }
    e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// True when another transaction made this one fail and running it again may succeed.
pub(crate) fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

/// The error with what the server or the socket said (`Display` alone says "db error").
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        (None, Some(source)) => format!("{e}: {source}"),
        (None, None) => e.to_string(),
    }
}

/// What a caller is told about a database error.
pub(crate) fn db_error(e: tokio_postgres::Error) -> StoreError {
    {
        if is_connection_error(&e) || is_retryable(&e) {
            return StoreError::Unavailable(describe(&e));
        }
        match e.as_db_error() {
            // Clients see a conflict's message: it names no table or constraint.
            Some(db) if *db.code() == SqlState::UNIQUE_VIOLATION => StoreError::Conflict("already exists".into()),
            _ => StoreError::Backend(describe(&e)),
        }
    }
}

/// What a caller is told when no read connection could be had.
fn pool_error(e: PoolError) -> StoreError {
    {
        match e {
            PoolError::Backend(e) => db_error(e),
            e => StoreError::Unavailable(e.to_string()),
        }
    }
}

/// A name for this process's connections that no other process shares.
fn instance_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

fn gone() -> StoreError {
    StoreError::Unavailable("the store is shutting down".into())
}

/// The connection settings from a `postgres://` URL, with Parley's timeouts and keepalives so
/// that a vanished server is noticed instead of waited on.
fn config(url: &str) -> Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e| StoreError::Invalid(format!("bad PostgreSQL URL: {e}")))?;
    if config.get_application_name().is_none() {
        config.application_name("parley");
    }
    config.keepalives(true).keepalives_idle(Duration::from_secs(10)).tcp_user_timeout(Duration::from_secs(10));
    Ok(config)
}

/// Opens one connection, its I/O driven by a task of its own.
///
/// Connecting is bounded by our own timeout (or the URL's `connect_timeout`, if shorter), so a
/// server that never answers becomes [`StoreError::Unavailable`] by type, not by error text.
pub(crate) async fn open(config: &tokio_postgres::Config) -> PgResult<ClientWrapper> {
    let limit = config.get_connect_timeout().map_or(CONNECT_TIMEOUT, |t| (*t).min(CONNECT_TIMEOUT));
    let (client, connection) = tokio::time::timeout(limit, config.connect(NoTls))
        .await
        .map_err(|_| StoreError::Unavailable("connecting to PostgreSQL timed out".into()))??;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %describe(&e), "PostgreSQL connection ended");
        }
    });
    Ok(ClientWrapper::new(client, task))
}

/// Ids as the numbers a PostgreSQL array parameter carries.
pub(crate) fn raw<T: Copy + Into<i64>>(ids: &[T]) -> Vec<i64> {
    ids.iter().map(|&id| id.into()).collect()
}

// Small helpers over the statement cache, shared by the writer and the readers.

pub(crate) async fn query(db: &ClientWrapper, sql: &str, params: &[&(dyn ToSql + Sync)]) -> PgResult<Vec<Row>> {
    let st = db.prepare_cached(sql).await?;
    Ok(db.query(&st, params).await?)
}

pub(crate) async fn query_opt(db: &ClientWrapper, sql: &str, params: &[&(dyn ToSql + Sync)]) -> PgResult<Option<Row>> {
    let st = db.prepare_cached(sql).await?;
    Ok(db.query_opt(&st, params).await?)
}

pub(crate) async fn query_one(db: &ClientWrapper, sql: &str, params: &[&(dyn ToSql + Sync)]) -> PgResult<Row> {
    let st = db.prepare_cached(sql).await?;
    Ok(db.query_one(&st, params).await?)
}

pub(crate) async fn execute(db: &ClientWrapper, sql: &str, params: &[&(dyn ToSql + Sync)]) -> PgResult<u64> {
    let st = db.prepare_cached(sql).await?;
    Ok(db.execute(&st, params).await?)
}

impl PgStore {
    /// Applies the migrations this build has and the database lacks (what `parley migrate`
    /// does). Safe to run from several nodes at once.
    pub async fn migrate(url: &str) -> Result<()> {
        let mut db = open(&config(url)?).await?;
        Ok(schema::migrate(&mut db).await?)
    }

    /// Connects to the database at `url` as node `node_id` (unique among the nodes sharing the
    /// database: it is part of every id this node makes, and a second live node with the same id
    /// is refused), migrating it first unless `run_migrations` is false, in which case a
    /// database that is behind is refused. Committed messages and pointer changes are published
    /// to `events`.
    pub async fn connect(
        url: &str,
        node_id: u16,
        run_migrations: bool,
        events: EventSender,
    ) -> Result<PgStore, ConnectError> {
        let config = config(url)?;
        let node = writer::Node { config: config.clone(), id: node_id, instance: instance_name() };
        let mut db = node.connect(true).await?;
        if run_migrations {
            schema::migrate(&mut db).await?;
        } else {
            schema::check(&db).await?;
        }
        let ids = Arc::new(IdGen::new(node_id));
        // Every later id is larger than any stored one, even if the clock stepped back.
        let max: Option<i64> = query_one(
            &db,
            "SELECT greatest((SELECT max(id) FROM users), (SELECT max(id) FROM devices),
                             (SELECT max(id) FROM conversations), (SELECT max(message_id) FROM messages),
                             (SELECT max(media_id) FROM media))",
            &[],
        )
        .await?
        .try_get(0)
        .map_err(PgError::from)?;
        ids.observe(max.unwrap_or(0));

        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(READERS)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))?;

        let (jobs, rx) = mpsc::channel(WRITE_QUEUE);
        let stats = Arc::new(WriterStats::default());
        writer::spawn(writer::Writer::new(node, db, ids.clone(), rx, events, stats.clone()));
        Ok(PgStore { stats, jobs, pool, ids })
    }

    /// Queues `op` for the writer; the ticket resolves when its batch has committed. Jobs run in
    /// the order they were queued.
    async fn submit<T: writer::FromReply>(&self, op: Op) -> Result<Ticket<T>> {
        let (tx, rx) = oneshot::channel();
        let answer: writer::Answer = Box::new(move |r: Result<Reply>| {
            let _ = tx.send(r.and_then(T::from_reply));
        });
        self.jobs.send(Msg::Job(writer::Job { op, answer })).await.map_err(|_| gone())?;
        Ok(Ticket::new(rx))
    }

    /// Queues `op` and waits for its batch to commit.
    async fn write<T: writer::FromReply>(&self, op: Op) -> Result<T> {
        self.submit(op).await?.wait().await
    }

    /// A pooled read connection.
    async fn reader(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_user(&self, username: &str, display_name: &str, password_hash: &str) -> Result<User> {
        self.write(Op::CreateUser {
            username: username.to_owned(),
            display_name: display_name.to_owned(),
            password_hash: password_hash.to_owned(),
        })
        .await
    }

    async fn create_accounts(&self, accounts: Vec<NewAccount>) -> Result<Vec<(User, Device)>> {
        self.write(Op::CreateAccounts(accounts)).await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        Ok(accounts::user(&*self.reader().await?, id).await?)
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        Ok(accounts::credentials(&*self.reader().await?, username).await?.map(|c| c.user))
    }

    async fn user_credentials(&self, username: &str) -> Result<Option<UserCredentials>> {
        Ok(accounts::credentials(&*self.reader().await?, username).await?)
    }

    async fn presence_records(&self, users: &[UserId]) -> Result<Vec<PresenceRecord>> {
        Ok(accounts::presence_records(&*self.reader().await?, users).await?)
    }

    async fn set_last_seen(&self, user: UserId, at: i64) -> Result<()> {
        self.write(Op::SetLastSeen { user, at }).await
    }

    async fn set_last_seen_visible(&self, user: UserId, visible: bool) -> Result<()> {
        self.write(Op::SetLastSeenVisible { user, visible }).await
    }

    async fn create_device(&self, user_id: UserId, name: &str, token_hash: [u8; 32]) -> Result<Device> {
        self.write(Op::CreateDevice { user: user_id, name: name.to_owned(), token_hash }).await
    }

    async fn device_by_token(&self, token_hash: [u8; 32]) -> Result<Option<Device>> {
        Ok(accounts::device_by_token(&*self.reader().await?, &token_hash).await?)
    }

    async fn devices(&self, user_id: UserId) -> Result<Vec<Device>> {
        Ok(accounts::devices(&*self.reader().await?, user_id).await?)
    }

    async fn touch_device(&self, device_id: DeviceId, at: i64) -> Result<()> {
        self.write(Op::TouchDevice { device: device_id, at }).await
    }

    async fn delete_device(&self, user_id: UserId, device_id: DeviceId) -> Result<bool> {
        self.write(Op::DeleteDevice { user: user_id, device: device_id }).await
    }

    async fn create_direct(&self, a: UserId, b: UserId, encrypted: bool) -> Result<(ConversationId, bool)> {
        self.write(Op::CreateDirect { a, b, encrypted }).await
    }

    async fn create_group(
        &self,
        creator: UserId,
        title: &str,
        member_ids: &[UserId],
        encrypted: bool,
    ) -> Result<ConversationId> {
        self.write(Op::CreateGroup { creator, title: title.to_owned(), members: member_ids.to_vec(), encrypted }).await
    }

    async fn conversation(
        &self,
        user: UserId,
        id: ConversationId,
        with_members: bool,
    ) -> Result<Option<ConversationView>> {
        Ok(conversations::view(&*self.reader().await?, user, id, with_members).await?)
    }

    async fn conversation_views(
        &self,
        id: ConversationId,
        users: &[UserId],
        with_members: bool,
    ) -> Result<Vec<(UserId, ConversationView)>> {
        Ok(conversations::views(&*self.reader().await?, id, users, with_members).await?)
    }

    async fn conversations(&self, user: UserId) -> Result<Vec<ConversationView>> {
        Ok(conversations::list(&*self.reader().await?, user).await?)
    }

    async fn contacts_among(&self, user: UserId, candidates: &[UserId]) -> Result<Vec<UserId>> {
        Ok(conversations::contacts_among(&*self.reader().await?, user, candidates).await?)
    }

    async fn member_windows(&self, id: ConversationId) -> Result<Vec<MemberWindow>> {
        Ok(conversations::member_windows(&*self.reader().await?, id).await?)
    }

    async fn set_title(&self, actor: UserId, id: ConversationId, title: &str) -> Result<()> {
        self.write(Op::SetTitle { actor, conv: id, title: title.to_owned() }).await
    }

    async fn add_members(&self, actor: UserId, id: ConversationId, user_ids: &[UserId]) -> Result<()> {
        self.write(Op::AddMembers { actor, conv: id, users: user_ids.to_vec() }).await
    }

    async fn remove_member(&self, actor: UserId, id: ConversationId, user: UserId) -> Result<()> {
        self.write(Op::RemoveMember { actor, conv: id, user }).await
    }

    async fn set_role(&self, actor: UserId, id: ConversationId, user: UserId, role: Role) -> Result<()> {
        self.write(Op::SetRole { actor, conv: id, user, role }).await
    }

    async fn enqueue_send(&self, msg: NewMessage) -> Result<Ticket<SendOutcome>> {
        self.submit(Op::Send(msg)).await
    }

    async fn history(&self, user: UserId, id: ConversationId, q: HistoryQuery) -> Result<Vec<Message>> {
        Ok(messages::history(&*self.reader().await?, user, id, q).await?)
    }

    async fn backlog(&self, device: DeviceId, user: UserId) -> Result<Vec<Backlog>> {
        Ok(messages::backlog(&*self.reader().await?, device, user).await?)
    }

    async fn log_range(&self, id: ConversationId, after_seq: Seq, upto_seq: Seq, limit: u32) -> Result<Vec<Message>> {
        Ok(messages::range(&*self.reader().await?, id, after_seq.0, upto_seq.0, limit).await?)
    }

    async fn enqueue_ack(&self, device: DeviceId, user: UserId, id: ConversationId, seq: Seq) -> Result<Ticket<()>> {
        self.submit(Op::Ack { device, user, conv: id, seq }).await
    }

    async fn enqueue_read(&self, user: UserId, id: ConversationId, seq: Seq) -> Result<Ticket<()>> {
        self.submit(Op::Read { user, conv: id, seq }).await
    }

    async fn receipts(&self, user: UserId, id: ConversationId, seq: Seq) -> Result<ReceiptSummary> {
        Ok(messages::receipts(&*self.reader().await?, user, id, seq).await?)
    }

    async fn set_settings(
        &self,
        user: UserId,
        id: ConversationId,
        patch: SettingsPatch,
    ) -> Result<Option<MemberSettings>> {
        Ok(push::set_settings(&*self.reader().await?, user, id, patch).await?)
    }

    async fn set_dnd(&self, user: UserId, until: Option<i64>) -> Result<()> {
        Ok(push::set_dnd(&*self.reader().await?, user, until).await?)
    }

    async fn dnd_until(&self, user: UserId) -> Result<Option<i64>> {
        Ok(push::dnd_until(&*self.reader().await?, user).await?)
    }

    async fn set_push(
        &self,
        device: DeviceId,
        user: UserId,
        kind: PushKind,
        address: PushAddress,
    ) -> Result<PushRegistration> {
        Ok(push::set_push(&*self.reader().await?, device, user, kind, address).await?)
    }

    async fn delete_push(&self, device: DeviceId) -> Result<bool> {
        Ok(push::delete_push(&*self.reader().await?, device).await?)
    }

    async fn push_registration(&self, device: DeviceId) -> Result<Option<PushRegistration>> {
        Ok(push::registration_of(&*self.reader().await?, device).await?)
    }

    async fn take_push_invalidated(&self, device: DeviceId) -> Result<Option<PushKind>> {
        Ok(push::take_invalidated(&*self.reader().await?, device).await?)
    }

    async fn claim_pushes(&self, node: &str, now: i64, lease_ms: i64, limit: u32) -> Result<Vec<PushJob>> {
        Ok(push::claim(&*self.reader().await?, node, now, lease_ms, limit).await?)
    }

    async fn next_push_due(&self) -> Result<Option<i64>> {
        Ok(push::next_due(&*self.reader().await?).await?)
    }

    async fn finish_pushes(&self, done: Vec<PushDone>) -> Result<()> {
        Ok(push::finish(&*self.reader().await?, done).await?)
    }

    async fn release_pushes(&self, node: &str) -> Result<()> {
        Ok(push::release(&*self.reader().await?, node).await?)
    }

    async fn secret(&self, name: &str, fresh: Vec<u8>) -> Result<Vec<u8>> {
        Ok(push::secret(&*self.reader().await?, name, fresh).await?)
    }

    async fn put_keys(&self, user: UserId, device: DeviceId, keys: KeyUpload) -> Result<u32> {
        self.write(Op::PutKeys { user, device, keys }).await
    }

    async fn has_identity(&self, device: DeviceId) -> Result<bool> {
        let db = self.reader().await?;
        let row = query_opt(&db, "SELECT identity IS NOT NULL FROM devices WHERE id = $1", &[&device.0]).await?;
        Ok(match row {
            Some(r) => r.try_get(0).map_err(PgError::from)?,
            None => false,
        })
    }

    async fn key_counts(&self, device: DeviceId) -> Result<(u32, bool)> {
        Ok(e2ee::key_counts(&*self.reader().await?, device).await?)
    }

    async fn claim_keys(&self, claimer: UserId, devices: Vec<(UserId, DeviceId)>) -> Result<Vec<ClaimedKey>> {
        self.write(Op::ClaimKeys { claimer, devices }).await
    }

    async fn co_members(&self, user: UserId) -> Result<Vec<UserId>> {
        Ok(e2ee::co_members(&*self.reader().await?, user).await?)
    }

    async fn device_list(&self, viewer: UserId, user: UserId) -> Result<Option<DeviceList>> {
        Ok(e2ee::device_list(&*self.reader().await?, viewer, user).await?)
    }

    async fn queue_to_device(
        &self,
        sender: UserId,
        device: DeviceId,
        client_id: String,
        messages: Vec<ToDeviceOut>,
    ) -> Result<()> {
        self.write(Op::QueueToDevice { sender, device, client_id, messages }).await
    }

    async fn to_device_after(&self, device: DeviceId, after_id: i64, limit: u32) -> Result<Vec<ToDeviceMessage>> {
        Ok(e2ee::after(&*self.reader().await?, device, after_id, limit).await?)
    }

    async fn ack_to_device(&self, device: DeviceId, up_to_id: i64) -> Result<()> {
        self.write(Op::AckToDevice { device, up_to_id }).await
    }

    async fn create_media(&self, uploader: UserId, size: u64, content_type: &str, sha256: [u8; 32]) -> Result<Media> {
        let id = MediaId(self.ids.next());
        Ok(media::create(&*self.reader().await?, id, uploader, size, content_type, sha256).await?)
    }

    async fn media(&self, id: MediaId) -> Result<Option<Media>> {
        Ok(media::get(&*self.reader().await?, id).await?)
    }

    async fn media_ready(&self, id: MediaId) -> Result<bool> {
        Ok(media::ready(&*self.reader().await?, id).await?)
    }

    async fn doom_upload(&self, uploader: UserId, id: MediaId) -> Result<bool> {
        Ok(media::doom_upload(&*self.reader().await?, uploader, id).await?)
    }

    async fn media_visible(&self, user: UserId, id: MediaId) -> Result<bool> {
        Ok(media::visible(&*self.reader().await?, user, id).await?)
    }

    async fn media_usage(&self, user: UserId, since: i64) -> Result<parley_store::media::MediaUsage> {
        Ok(media::usage(&*self.reader().await?, user, since).await?)
    }

    async fn doom_media(&self, orphan_before: i64, limit: u32) -> Result<Vec<MediaId>> {
        Ok(media::doom(&*self.reader().await?, orphan_before, limit).await?)
    }

    async fn forget_media(&self, ids: &[MediaId]) -> Result<()> {
        Ok(media::forget(&*self.reader().await?, ids).await?)
    }

    async fn media_tombstones(&self, before: i64, limit: u32) -> Result<Vec<MediaId>> {
        Ok(media::tombstones(&*self.reader().await?, before, limit).await?)
    }

    async fn purge_media(&self, ids: &[MediaId]) -> Result<()> {
        Ok(media::purge(&*self.reader().await?, ids).await?)
    }

    async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Msg::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    fn writer_stats(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }
}

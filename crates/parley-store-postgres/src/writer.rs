//! The node's single writer: one task owns a connection and commits queued jobs in batches, one
//! transaction per batch (group commit), then publishes the batch's events and answers every
//! caller, as the SQLite writer does.
//!
//! Jobs are data ([`Op`]), not closures, so a batch can run again: after a deadlock with another
//! node, a lost connection (before `COMMIT` was sent), or the race of two nodes storing the same
//! `(sender, client_id)`. Runs of plain sends and pointer moves are executed together
//! ([`super::messages::segment`]): one pipelined round trip reads what they need, one writes
//! their entries, whatever their number. Every other job runs on its own inside a savepoint, so
//! one failing job does not undo the others. Should a multi-row statement fail for a reason
//! that is not about the batch as a whole, the batch runs again with every job on its own, so
//! the failure stays with the job that caused it.
//!
//! Cursor, receipt-pointer and activity updates are coalesced per batch and written at its end;
//! a batch holding only those commits with `synchronous_commit = off`.
//!
//! The writer survives the server going away: a job whose batch cannot reach PostgreSQL is
//! answered [`StoreError::Unavailable`] (never left waiting), and the next batch reconnects,
//! with a backoff between failed attempts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::ClientWrapper;
use parley_core::ids::*;
use parley_core::model::*;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;

use crate::{PgError, PgResult, accounts, conversations, describe, is_connection_error, is_retryable, messages, open};
use parley_store::{EventSender, NewMessage, Result, SendOutcome, StoreError, StoreEvent, WriterStats};

/// Largest number of jobs in one transaction.
const MAX_BATCH: usize = 2048;
/// How many times one batch is tried before its jobs are answered with the last error.
const MAX_ATTEMPTS: u32 = 5;
/// How long a batch of lazy jobs (acks, reads, activity stamps) waits for a durable job to ride
/// along with, as the SQLite writer does: under traffic a send comes well within it, so pointer
/// moves cost no transaction of their own.
const LAZY_HOLD: Duration = Duration::from_millis(4);
/// A batch this large (this one or the one before) means jobs arrive faster than commits
/// finish...
const BUSY_BATCH: usize = 4;
/// ...and then the writer gathers for this much longer before committing (rounded up to the
/// timer's millisecond tick): most of a commit's cost is per commit (the WAL flush), not per
/// job. A lone client, whose batches are small, never waits. Looking at the previous batch too
/// (the SQLite writer looks at this one only) matters: right after a large batch is answered,
/// the first of its callers to come back would otherwise be committed alone while the others
/// queue behind that commit (measured with 100 closed-loop senders: batches alternating 1 and
/// ~100 jobs, 11k sends/s, against a steady ~100 and 17-19k sends/s).
const BUSY_GATHER: Duration = Duration::from_micros(250);
/// The first advisory-lock key of node ids (the bytes of "parl"); the node id is the second.
const NODE_LOCK_CLASS: i32 = 0x7061_726c;
/// Bounds of the delay between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One write, as data. (Not `Debug`: some carry password hashes; logs use [`Op::name`].)
pub(crate) enum Op {
    CreateUser {
        username: String,
        display_name: String,
        password_hash: String,
    },
    CreateAccounts(Vec<NewAccount>),
    SetLastSeen {
        user: UserId,
        at: i64,
    },
    SetLastSeenVisible {
        user: UserId,
        visible: bool,
    },
    CreateDevice {
        user: UserId,
        name: String,
        token_hash: [u8; 32],
    },
    TouchDevice {
        device: DeviceId,
        at: i64,
    },
    DeleteDevice {
        user: UserId,
        device: DeviceId,
    },
    CreateDirect {
        a: UserId,
        b: UserId,
        encrypted: bool,
    },
    CreateGroup {
        creator: UserId,
        title: String,
        members: Vec<UserId>,
        encrypted: bool,
    },
    SetTitle {
        actor: UserId,
        conv: ConversationId,
        title: String,
    },
    AddMembers {
        actor: UserId,
        conv: ConversationId,
        users: Vec<UserId>,
    },
    RemoveMember {
        actor: UserId,
        conv: ConversationId,
        user: UserId,
    },
    SetRole {
        actor: UserId,
        conv: ConversationId,
        user: UserId,
        role: Role,
    },
    Send(NewMessage),
    Ack {
        device: DeviceId,
        user: UserId,
        conv: ConversationId,
        seq: Seq,
    },
    Read {
        user: UserId,
        conv: ConversationId,
        seq: Seq,
    },
    PutKeys {
        user: UserId,
        device: DeviceId,
        keys: parley_store::e2ee::KeyUpload,
    },
    ClaimKeys {
        claimer: UserId,
        devices: Vec<(UserId, DeviceId)>,
    },
    QueueToDevice {
        sender: UserId,
        device: DeviceId,
        client_id: String,
        messages: Vec<parley_store::e2ee::ToDeviceOut>,
    },
    AckToDevice {
        device: DeviceId,
        up_to_id: i64,
    },
}

impl Op {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::CreateUser { .. } => "create_user",
            Op::CreateAccounts(_) => "create_accounts",
            Op::SetLastSeen { .. } => "set_last_seen",
            Op::SetLastSeenVisible { .. } => "set_last_seen_visible",
            Op::CreateDevice { .. } => "create_device",
            Op::TouchDevice { .. } => "touch_device",
            Op::DeleteDevice { .. } => "delete_device",
            Op::CreateDirect { .. } => "create_direct",
            Op::CreateGroup { .. } => "create_group",
            Op::SetTitle { .. } => "set_title",
            Op::AddMembers { .. } => "add_members",
            Op::RemoveMember { .. } => "remove_member",
            Op::SetRole { .. } => "set_role",
            Op::Send(_) => "send",
            Op::Ack { .. } => "ack",
            Op::Read { .. } => "read",
            Op::PutKeys { .. } => "put_keys",
            Op::ClaimKeys { .. } => "claim_keys",
            Op::QueueToDevice { .. } => "queue_to_device",
            Op::AckToDevice { .. } => "ack_to_device",
        }
    }

    /// Whether the job's writes must be durable before it is answered.
    fn durable(&self) -> bool {
        !matches!(
            self,
            Op::SetLastSeen { .. } | Op::TouchDevice { .. } | Op::Ack { .. } | Op::Read { .. } | Op::AckToDevice { .. }
        )
    }

    /// Whether the job can be executed together with its neighbours: plain sends (edits,
    /// deletes and reactions check their target one by one) and the coalesced lazy writes.
    pub(crate) fn is_bulk(&self) -> bool {
        match self {
            Op::Send(m) => m.target_seq.is_none() && m.media.is_empty(),
            Op::SetLastSeen { .. } | Op::TouchDevice { .. } | Op::Ack { .. } | Op::Read { .. } => true,
            _ => false,
        }
    }
}

/// What a job answers.
#[derive(Debug)]
pub(crate) enum Reply {
    Unit,
    Bool(bool),
    User(User),
    Accounts(Vec<(User, Device)>),
    Device(Device),
    Direct(ConversationId, bool),
    Conversation(ConversationId),
    Sent(SendOutcome),
    Count(u32),
    Claimed(Vec<parley_store::e2ee::ClaimedKey>),
}

/// The answer a caller waits for, taken out of a [`Reply`].
pub(crate) trait FromReply: Sized + Send + 'static {
    fn from_reply(r: Reply) -> Result<Self>;
}

macro_rules! from_reply {
    ($($t:ty => $p:pat => $v:expr;)*) => {
        $(impl FromReply for $t {
            fn from_reply(r: Reply) -> Result<Self> {
                match r {
                    $p => Ok($v),
                    other => Err(StoreError::Backend(format!("the writer answered {other:?}"))),
                }
            }
        })*
    };
}

from_reply! {
    () => Reply::Unit => ();
    bool => Reply::Bool(b) => b;
    User => Reply::User(u) => u;
    Vec<(User, Device)> => Reply::Accounts(a) => a;
    Device => Reply::Device(d) => d;
    (ConversationId, bool) => Reply::Direct(id, created) => (id, created);
    ConversationId => Reply::Conversation(id) => id;
    SendOutcome => Reply::Sent(s) => s;
    u32 => Reply::Count(n) => n;
    Vec<parley_store::e2ee::ClaimedKey> => Reply::Claimed(c) => c;
}

/// Answers the caller once the batch's commit result is known.
pub(crate) type Answer = Box<dyn FnOnce(Result<Reply>) + Send>;

pub(crate) struct Job {
    pub op: Op,
    pub answer: Answer,
}

pub(crate) enum Msg {
    Job(Job),
    Stop(oneshot::Sender<()>),
}

/// What a job sees: the open transaction, the id generator and the batch's pending state.
pub(crate) struct Ctx<'c> {
    pub db: &'c ClientWrapper,
    pub ids: &'c IdGen,
    pub events: Vec<StoreEvent>,
    /// Coalesced device cursors: (device, conversation) → seq.
    cursors: HashMap<(DeviceId, ConversationId), Seq>,
    /// Coalesced member pointers: (conversation, user) → (delivered_seq, read_seq).
    pointers: HashMap<(ConversationId, UserId), (Seq, Seq)>,
    /// Coalesced activity stamps: device → last_active_at, user → last_seen.
    touches: HashMap<DeviceId, i64>,
    last_seen: HashMap<UserId, i64>,
}

impl<'c> Ctx<'c> {
    fn new(db: &'c ClientWrapper, ids: &'c IdGen) -> Self {
        Ctx {
            db,
            ids,
            events: Vec::new(),
            cursors: HashMap::new(),
            pointers: HashMap::new(),
            touches: HashMap::new(),
            last_seen: HashMap::new(),
        }
    }

    pub(crate) fn advance_cursor(&mut self, device: DeviceId, conv: ConversationId, seq: Seq) {
        let e = self.cursors.entry((device, conv)).or_insert(seq);
        *e = (*e).max(seq);
    }

    pub(crate) fn advance_pointers(&mut self, conv: ConversationId, user: UserId, delivered: Seq, read: Seq) {
        let e = self.pointers.entry((conv, user)).or_insert((delivered, read));
        *e = (e.0.max(delivered), e.1.max(read));
    }

    pub(crate) fn touch_device(&mut self, device: DeviceId, at: i64) {
        let e = self.touches.entry(device).or_insert(at);
        *e = (*e).max(at);
    }

    pub(crate) fn set_last_seen(&mut self, user: UserId, at: i64) {
        let e = self.last_seen.entry(user).or_insert(at);
        *e = (*e).max(at);
    }

    /// Writes the coalesced updates (one pipelined round trip) and records a receipt event for
    /// each member pointer that moved. Keys are written in order, so two nodes flushing the
    /// same rows lock them in the same order.
    async fn flush(&mut self) -> PgResult<()> {
        let db = self.db;
        let mut cursors: Vec<_> = self.cursors.drain().collect();
        cursors.sort_unstable();
        let mut pointers: Vec<_> = self.pointers.drain().collect();
        pointers.sort_unstable();
        let mut touches: Vec<_> = self.touches.drain().collect();
        touches.sort_unstable();
        let mut seen: Vec<_> = self.last_seen.drain().collect();
        seen.sort_unstable();

        let cur_st = db
            .prepare_cached(
                "INSERT INTO device_cursors (device_id, conversation_id, seq)
                 SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[])
                 ON CONFLICT (device_id, conversation_id) DO UPDATE SET seq = greatest(device_cursors.seq, excluded.seq)",
            )
            .await?;
        let ptr_st = db
            .prepare_cached(
                "UPDATE members m SET delivered_seq = greatest(m.delivered_seq, k.d), read_seq = greatest(m.read_seq, k.r)
                 FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[]) AS k(c, u, d, r)
                 WHERE m.conversation_id = k.c AND m.user_id = k.u AND (m.delivered_seq < k.d OR m.read_seq < k.r)
                 RETURNING m.conversation_id, m.user_id, m.delivered_seq, m.read_seq",
            )
            .await?;
        let touch_st = db
            .prepare_cached(
                "UPDATE devices d SET last_active_at = greatest(d.last_active_at, k.at)
                 FROM unnest($1::int8[], $2::int8[]) AS k(id, at) WHERE d.id = k.id",
            )
            .await?;
        let seen_st = db
            .prepare_cached(
                "UPDATE users u SET last_seen = greatest(coalesce(u.last_seen, 0), k.at)
                 FROM unnest($1::int8[], $2::int8[]) AS k(id, at) WHERE u.id = k.id",
            )
            .await?;

        let (_, moved, _, _) = tokio::try_join!(
            async {
                if cursors.is_empty() {
                    return Ok(0);
                }
                let (d, c, s): (Vec<i64>, Vec<i64>, Vec<i64>) =
                    unzip3(cursors.iter().map(|&((d, c), s)| (d.0, c.0, s.0)));
                db.execute(&cur_st, &[&d, &c, &s]).await
            },
            async {
                if pointers.is_empty() {
                    return Ok(Vec::new());
                }
                let (c, u): (Vec<i64>, Vec<i64>) = pointers.iter().map(|&((c, u), _)| (c.0, u.0)).unzip();
                let (d, r): (Vec<i64>, Vec<i64>) = pointers.iter().map(|&(_, (d, r))| (d.0, r.0)).unzip();
                db.query(&ptr_st, &[&c, &u, &d, &r]).await
            },
            async {
                if touches.is_empty() {
                    return Ok(0);
                }
                let (id, at): (Vec<i64>, Vec<i64>) = touches.iter().map(|&(d, at)| (d.0, at)).unzip();
                db.execute(&touch_st, &[&id, &at]).await
            },
            async {
                if seen.is_empty() {
                    return Ok(0);
                }
                let (id, at): (Vec<i64>, Vec<i64>) = seen.iter().map(|&(u, at)| (u.0, at)).unzip();
                db.execute(&seen_st, &[&id, &at]).await
            },
        )?;
        let mut changes = Vec::with_capacity(moved.len());
        for row in moved {
            changes.push(ReceiptChange {
                conversation_id: ConversationId(row.try_get(0)?),
                user_id: UserId(row.try_get(1)?),
                delivered_seq: Seq(row.try_get(2)?),
                read_seq: Seq(row.try_get(3)?),
            });
        }
        // Deterministic order keeps the events (and tests) stable, as in SQLite.
        changes.sort_unstable_by_key(|c| (c.conversation_id, c.user_id));
        self.events.extend(changes.into_iter().map(StoreEvent::Receipt));
        Ok(())
    }
}

fn unzip3<A, B, C>(it: impl Iterator<Item = (A, B, C)>) -> (Vec<A>, Vec<B>, Vec<C>) {
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for (x, y, z) in it {
        a.push(x);
        b.push(y);
        c.push(z);
    }
    (a, b, c)
}

/// Who this node is, and how its writer connects.
pub(crate) struct Node {
    pub config: tokio_postgres::Config,
    pub id: u16,
    /// Names this process's writer connections, so a stale one can be recognized.
    pub instance: String,
}

impl Node {
    /// Opens the writer's connection and takes this node id's session advisory lock, which
    /// holds while the connection lives: a second live node with the same id cannot write. A
    /// lock held by an earlier connection of this same process (one the server has not yet
    /// noticed is dead, after a network failure) is taken over. With `wait`, a lock held by
    /// another process is waited on for a second (a node that just stopped), then refused.
    pub(crate) async fn connect(&self, wait: bool) -> PgResult<ClientWrapper> {
        let mut config = self.config.clone();
        let name = format!("parley-writer node={} instance={}", self.id, self.instance);
        config.application_name(&name);
        let db = open(&config).await?;
        let node = i32::from(self.id);
        let deadline = Instant::now() + Duration::from_secs(if wait { 1 } else { 0 });
        loop {
            let got: bool =
                db.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&NODE_LOCK_CLASS, &node]).await?.try_get(0)?;
            if got {
                return Ok(db);
            }
            // Our own stale session: end it, and try again at once.
            let stale = db
                .query(
                    "SELECT pg_terminate_backend(a.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                     WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::int8::oid
                       AND l.objid = $2::int8::oid AND l.objsubid = 2 AND a.application_name = $3",
                    &[&i64::from(NODE_LOCK_CLASS), &i64::from(node), &name],
                )
                .await?;
            if !stale.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            if Instant::now() >= deadline {
                return Err(PgError::NodeTaken(self.id));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub(crate) struct Writer {
    node: Node,
    /// The connection, while it is believed alive.
    db: Option<ClientWrapper>,
    /// No reconnection is tried before this instant; `delay` is the wait after the next failure.
    retry_at: Instant,
    delay: Duration,
    ids: Arc<IdGen>,
    rx: mpsc::Receiver<Msg>,
    events: EventSender,
    stats: Arc<WriterStats>,
}

/// The outcome of one attempt at a batch that did not commit.
struct Fail {
    error: StoreError,
    then: Then,
}

enum Then {
    /// Roll back and run the batch again (a deadlock, a lost connection before `COMMIT`).
    Retry,
    /// Roll back and run the batch again with every job on its own.
    Isolate,
    /// Answer every job with the error.
    GiveUp,
}

/// A committed batch: each job's answer, in order, and the events to publish.
struct Done {
    replies: Vec<Result<Reply>>,
    events: Vec<StoreEvent>,
}

/// True when the batch should run again: another transaction got in the way, the connection
/// broke, or another node stored the same `(sender, client_id)` first (the next attempt finds
/// it and answers with the original).
fn must_retry(e: &tokio_postgres::Error) -> bool {
    is_retryable(e)
        || is_connection_error(e)
        || e.as_db_error()
            .is_some_and(|db| *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some("idempotency_pkey"))
}

fn db_fail(e: tokio_postgres::Error, otherwise: Then) -> Fail {
    let then = if must_retry(&e) { Then::Retry } else { otherwise };
    Fail { error: crate::db_error(e), then }
}

fn pg_fail(e: PgError, otherwise: Then) -> Fail {
    match e {
        PgError::Db(e) => db_fail(e, otherwise),
        PgError::Store(error) => Fail { error, then: otherwise },
        e @ PgError::NodeTaken(_) => Fail { error: e.into(), then: otherwise },
    }
}

pub(crate) fn spawn(writer: Writer) {
    tokio::spawn(writer.run());
}

impl Writer {
    pub(crate) fn new(
        node: Node,
        db: ClientWrapper,
        ids: Arc<IdGen>,
        rx: mpsc::Receiver<Msg>,
        events: EventSender,
        stats: Arc<WriterStats>,
    ) -> Writer {
        Writer { node, db: Some(db), retry_at: Instant::now(), delay: BACKOFF_MIN, ids, rx, events, stats }
    }

    async fn run(mut self) {
        let mut stop: Option<oneshot::Sender<()>> = None;
        let mut batch: Vec<Job> = Vec::with_capacity(64);
        let mut previous = 0;
        while stop.is_none() {
            if batch.is_empty() {
                match self.rx.recv().await {
                    Some(msg) => take(msg, &mut batch, &mut stop),
                    None => break,
                }
            }
            self.drain_ready(&mut batch, &mut stop);
            if !batch.iter().any(|j| j.op.durable()) && stop.is_none() && batch.len() < MAX_BATCH {
                // Lazy jobs only: hold them until a durable job comes or the hold ends.
                let deadline = tokio::time::Instant::now() + LAZY_HOLD;
                while stop.is_none() && batch.len() < MAX_BATCH {
                    match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                        Ok(Some(msg)) => {
                            let durable = matches!(&msg, Msg::Job(j) if j.op.durable());
                            take(msg, &mut batch, &mut stop);
                            if durable {
                                self.drain_ready(&mut batch, &mut stop);
                                break;
                            }
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            if (batch.len() >= BUSY_BATCH || previous >= BUSY_BATCH) && batch.iter().any(|j| j.op.durable()) {
                let deadline = tokio::time::Instant::now() + BUSY_GATHER;
                while stop.is_none() && batch.len() < MAX_BATCH {
                    match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                        Ok(Some(msg)) => take(msg, &mut batch, &mut stop),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            previous = batch.len();
            if !batch.is_empty() {
                self.commit_batch(std::mem::take(&mut batch)).await;
            }
        }
        if !batch.is_empty() {
            self.commit_batch(batch).await;
        }
        self.close().await;
        if let Some(tx) = stop {
            let _ = tx.send(());
        }
    }

    /// Adds whatever is already queued, up to the batch limit.
    fn drain_ready(&mut self, batch: &mut Vec<Job>, stop: &mut Option<oneshot::Sender<()>>) {
        while stop.is_none() && batch.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(msg) => take(msg, batch, stop),
                Err(_) => break,
            }
        }
    }

    /// Makes sure there is a live connection, reconnecting unless the backoff says not yet.
    async fn connection(&mut self) -> Result<()> {
        if self.db.as_ref().is_some_and(|db| !db.is_closed()) {
            return Ok(());
        }
        self.db = None;
        let now = Instant::now();
        if now < self.retry_at {
            return Err(StoreError::Unavailable("PostgreSQL is unreachable; reconnecting".into()));
        }
        match self.node.connect(false).await {
            Ok(db) => {
                tracing::info!("the PostgreSQL writer reconnected");
                self.db = Some(db);
                self.delay = BACKOFF_MIN;
                Ok(())
            }
            Err(e) => {
                let e = StoreError::from(e);
                tracing::warn!(error = %e, retry_in = ?self.delay, "the PostgreSQL writer cannot reconnect");
                self.retry_at = Instant::now() + self.delay;
                self.delay = (self.delay * 2).min(BACKOFF_MAX);
                Err(match e {
                    StoreError::Unavailable(m) => StoreError::Unavailable(m),
                    other => StoreError::Unavailable(other.to_string()),
                })
            }
        }
    }

    async fn commit_batch(&mut self, jobs: Vec<Job>) {
        let started = Instant::now();
        let n = jobs.len();
        let durable = jobs.iter().any(|j| j.op.durable());
        let (ops, answers): (Vec<Op>, Vec<Answer>) = jobs.into_iter().map(|j| (j.op, j.answer)).unzip();
        let mut bulk = true;
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            if let Err(e) = self.connection().await {
                break Err(e);
            }
            let Some(db) = self.db.as_ref() else { break Err(StoreError::Unavailable("no connection".into())) };
            let fail = match run_batch(db, &self.ids, &ops, durable, bulk).await {
                Ok(done) => break Ok(done),
                Err(fail) => fail,
            };
            if db.is_closed() {
                self.db = None;
            } else if let Err(e) = db.batch_execute("ROLLBACK").await {
                tracing::warn!(error = %describe(&e), "rollback failed; dropping the connection");
                self.db = None;
            }
            match fail.then {
                Then::Retry if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(error = %fail.error, attempt, "retrying a write batch");
                    // A little spread, so two nodes that deadlocked do not meet again at once.
                    let spread = u64::from(started.elapsed().subsec_nanos() % 5);
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * (1 + spread))).await;
                }
                Then::Isolate if bulk => {
                    tracing::warn!(error = %fail.error, "a multi-row write failed; running the batch job by job");
                    bulk = false;
                }
                _ => break Err(fail.error),
            }
        };
        match outcome {
            Ok(Done { replies, events }) => {
                if !events.is_empty() {
                    // Published before anyone is answered, so a sender's `sent` never overtakes
                    // its fanout. A closed receiver means the server is shutting down.
                    let _ = self.events.send(events).await;
                }
                for (answer, reply) in answers.into_iter().zip(replies) {
                    answer(reply);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = n, "write batch failed");
                for answer in answers {
                    answer(Err(e.clone()));
                }
            }
        }
        let micros = started.elapsed().as_micros() as u64;
        self.stats.batch_size.observe(n as u64);
        self.stats.commit_micros.observe(micros);
        tracing::trace!(batch = n, micros, attempt, "committed");
    }

    /// Gives the node id back and closes the connection.
    async fn close(&mut self) {
        if let Some(db) = self.db.take()
            && !db.is_closed()
        {
            let node = i32::from(self.node.id);
            if let Err(e) = db.execute("SELECT pg_advisory_unlock($1, $2)", &[&NODE_LOCK_CLASS, &node]).await {
                tracing::debug!(error = %describe(&e), "cannot release the node lock");
            }
        }
    }
}

fn take(msg: Msg, batch: &mut Vec<Job>, stop: &mut Option<oneshot::Sender<()>>) {
    match msg {
        Msg::Job(j) => batch.push(j),
        Msg::Stop(tx) => *stop = Some(tx),
    }
}

/// One attempt at a batch: `BEGIN`, every job in order, the coalesced updates, `COMMIT`.
async fn run_batch(db: &ClientWrapper, ids: &IdGen, ops: &[Op], durable: bool, bulk: bool) -> Result<Done, Fail> {
    let begin = if durable { "BEGIN" } else { "BEGIN; SET LOCAL synchronous_commit = off" };
    db.batch_execute(begin).await.map_err(|e| db_fail(e, Then::GiveUp))?;
    let mut ctx = Ctx::new(db, ids);
    let mut replies = Vec::with_capacity(ops.len());
    let mut i = 0;
    while i < ops.len() {
        if bulk && ops[i].is_bulk() {
            let end = ops[i..].iter().position(|op| !op.is_bulk()).map_or(ops.len(), |p| i + p);
            messages::segment(&mut ctx, &ops[i..end], &mut replies).await.map_err(|e| pg_fail(e, Then::Isolate))?;
            i = end;
        } else {
            replies.push(single(&mut ctx, &ops[i]).await?);
            i += 1;
        }
    }
    ctx.flush().await.map_err(|e| pg_fail(e, Then::GiveUp))?;
    if let Err(e) = db.batch_execute("COMMIT").await {
        // Whether a commit that lost its connection happened cannot be known: say so, and let
        // the callers retry (a send's retry is idempotent).
        let then = if is_retryable(&e) { Then::Retry } else { Then::GiveUp };
        return Err(Fail { error: crate::db_error(e), then });
    }
    Ok(Done { replies, events: ctx.events })
}

/// Runs one job inside a savepoint: a job that fails leaves no writes and no events behind.
async fn single(ctx: &mut Ctx<'_>, op: &Op) -> Result<Result<Reply>, Fail> {
    ctx.db.batch_execute("SAVEPOINT job").await.map_err(|e| db_fail(e, Then::GiveUp))?;
    let events_before = ctx.events.len();
    let error = match run_op(ctx, op).await {
        Ok(reply) => {
            ctx.db.batch_execute("RELEASE SAVEPOINT job").await.map_err(|e| db_fail(e, Then::GiveUp))?;
            return Ok(Ok(reply));
        }
        Err(PgError::Store(e)) => e,
        Err(PgError::Db(e)) if must_retry(&e) => return Err(db_fail(e, Then::Retry)),
        Err(e @ PgError::NodeTaken(_)) => e.into(),
        Err(PgError::Db(e)) => {
            tracing::warn!(error = %describe(&e), op = op.name(), "a write job failed");
            crate::db_error(e)
        }
    };
    ctx.events.truncate(events_before);
    ctx.db
        .batch_execute("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")
        .await
        .map_err(|e| db_fail(e, Then::GiveUp))?;
    Ok(Err(error))
}

async fn run_op(ctx: &mut Ctx<'_>, op: &Op) -> PgResult<Reply> {
    Ok(match op {
        Op::CreateUser { username, display_name, password_hash } => {
            Reply::User(accounts::create_user(ctx, username, display_name, password_hash).await?)
        }
        Op::CreateAccounts(accounts) => Reply::Accounts(accounts::create_accounts(ctx, accounts).await?),
        Op::SetLastSeen { user, at } => {
            ctx.set_last_seen(*user, *at);
            Reply::Unit
        }
        Op::SetLastSeenVisible { user, visible } => {
            accounts::set_last_seen_visible(ctx, *user, *visible).await?;
            Reply::Unit
        }
        Op::CreateDevice { user, name, token_hash } => {
            Reply::Device(accounts::create_device(ctx, *user, name, token_hash).await?)
        }
        Op::TouchDevice { device, at } => {
            ctx.touch_device(*device, *at);
            Reply::Unit
        }
        Op::DeleteDevice { user, device } => Reply::Bool(accounts::delete_device(ctx, *user, *device).await?),
        Op::CreateDirect { a, b, encrypted } => {
            let (id, created) = conversations::create_direct(ctx, *a, *b, *encrypted).await?;
            Reply::Direct(id, created)
        }
        Op::CreateGroup { creator, title, members, encrypted } => {
            Reply::Conversation(conversations::create_group(ctx, *creator, title, members, *encrypted).await?)
        }
        Op::SetTitle { actor, conv, title } => {
            conversations::set_title(ctx, *actor, *conv, title).await?;
            Reply::Unit
        }
        Op::AddMembers { actor, conv, users } => {
            conversations::add_members(ctx, *actor, *conv, users).await?;
            Reply::Unit
        }
        Op::RemoveMember { actor, conv, user } => {
            conversations::remove_member(ctx, *actor, *conv, *user).await?;
            Reply::Unit
        }
        Op::SetRole { actor, conv, user, role } => {
            conversations::set_role(ctx, *actor, *conv, *user, *role).await?;
            Reply::Unit
        }
        Op::Send(m) => Reply::Sent(messages::send(ctx, m).await?),
        Op::Ack { device, user, conv, seq } => {
            messages::ack(ctx, *device, *user, *conv, *seq).await?;
            Reply::Unit
        }
        Op::Read { user, conv, seq } => {
            messages::read(ctx, *user, *conv, *seq).await?;
            Reply::Unit
        }
        Op::PutKeys { user, device, keys } => Reply::Count(crate::e2ee::put_keys(ctx, *user, *device, keys).await?),
        Op::ClaimKeys { claimer, devices } => Reply::Claimed(crate::e2ee::claim(ctx, *claimer, devices).await?),
        Op::QueueToDevice { sender, device, client_id, messages } => {
            crate::e2ee::queue(ctx, *sender, *device, client_id, messages).await?;
            Reply::Unit
        }
        Op::AckToDevice { device, up_to_id } => {
            crate::e2ee::ack(ctx, *device, *up_to_id).await?;
            Reply::Unit
        }
    })
}

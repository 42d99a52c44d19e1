//! The single writer: one thread owns the write connection and commits queued jobs in batches,
//! one transaction and one fsync per batch (group commit), then publishes the batch's events and
//! answers every caller.
//!
//! Jobs run inside a savepoint each, so one failing job (a taken username, say) does not undo the
//! others in its batch. Cursor and receipt-pointer updates are coalesced per batch and written at
//! its end; a batch holding only those commits without an fsync (WAL with `synchronous=NORMAL`
//! survives `kill -9`, and losing the tail of them on power loss only causes re-delivery).

use std::collections::HashMap;
use std::sync::Arc;

use parley_core::ids::*;
use parley_core::model::ReceiptChange;
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use parley_store::{EventSender, StoreError, StoreEvent, WriterStats};

/// Largest number of jobs in one transaction.
const MAX_BATCH: usize = 2048;

/// Answers the caller once the batch's commit result is known.
pub(crate) type Finish = Box<dyn FnOnce(parley_store::Result<()>) + Send>;
/// Runs the job in the open transaction; returns how to answer it and whether it succeeded
/// (a failed job's writes are rolled back to its savepoint).
pub(crate) type RunFn = Box<dyn FnOnce(&mut WriteCtx<'_>) -> (Finish, bool) + Send>;

pub(crate) struct Job {
    /// Whether the job's writes must be on disk before it is answered. Jobs that are not durable
    /// (acks, reads, activity stamps) write at most one statement themselves, which SQLite makes
    /// atomic on its own, so they run without a savepoint: acks are the most frequent job.
    pub durable: bool,
    pub run: RunFn,
}

pub(crate) enum Msg {
    Job(Job),
    Stop(oneshot::Sender<()>),
}

/// What a job sees: the open transaction, the id generator and the batch's pending state.
pub(crate) struct WriteCtx<'c> {
    pub conn: &'c Connection,
    pub ids: &'c IdGen,
    pub events: Vec<StoreEvent>,
    /// Whether any device may have a live push registration. Only this thread writes
    /// registrations, so while it is false no message can push anyone and the recipients'
    /// query is skipped (it is a quarter of a message's cost otherwise).
    pub push_live: &'c std::cell::Cell<bool>,
    /// Coalesced device cursors: (device, conversation) → seq.
    cursors: HashMap<(DeviceId, ConversationId), Seq>,
    /// Coalesced member pointers: (conversation, user) → (delivered_seq, read_seq).
    pointers: HashMap<(ConversationId, UserId), (Seq, Seq)>,
}

impl WriteCtx<'_> {
    pub(crate) fn advance_cursor(&mut self, device: DeviceId, conv: ConversationId, seq: Seq) {
        let e = self.cursors.entry((device, conv)).or_insert(seq);
        *e = (*e).max(seq);
    }

    pub(crate) fn advance_pointers(&mut self, conv: ConversationId, user: UserId, delivered: Seq, read: Seq) {
        let e = self.pointers.entry((conv, user)).or_insert((delivered, read));
        *e = (e.0.max(delivered), e.1.max(read));
    }

    /// Writes the coalesced pointers and records a receipt event for each one that moved.
    fn flush_pointers(&mut self) -> rusqlite::Result<()> {
        let mut cur = self.conn.prepare_cached(
            "INSERT INTO device_cursors (device_id, conversation_id, seq) VALUES (?1, ?2, ?3)
             ON CONFLICT (device_id, conversation_id) DO UPDATE SET seq = max(seq, excluded.seq)",
        )?;
        for ((device, conv), seq) in self.cursors.drain() {
            cur.execute(params![device.0, conv.0, seq.0])?;
        }
        let mut ptr = self.conn.prepare_cached(
            "UPDATE members SET delivered_seq = max(delivered_seq, ?3), read_seq = max(read_seq, ?4)
             WHERE conversation_id = ?1 AND user_id = ?2 AND (delivered_seq < ?3 OR read_seq < ?4)
             RETURNING delivered_seq, read_seq",
        )?;
        let mut pointers: Vec<_> = self.pointers.drain().collect();
        // Deterministic order keeps the events (and tests) stable.
        pointers.sort_unstable_by_key(|&(k, _)| k);
        for ((conv, user), (delivered, read)) in pointers {
            let mut rows = ptr.query(params![conv.0, user.0, delivered.0, read.0])?;
            if let Some(row) = rows.next()? {
                self.events.push(StoreEvent::Receipt(ReceiptChange {
                    conversation_id: conv,
                    user_id: user,
                    delivered_seq: Seq(row.get(0)?),
                    read_seq: Seq(row.get(1)?),
                }));
            }
        }
        Ok(())
    }
}

pub(crate) fn spawn(
    conn: WriteConns,
    ids: IdGen,
    rx: mpsc::Receiver<Msg>,
    events: EventSender,
    stats: Arc<WriterStats>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("parley-sqlite-writer".into())
        .spawn(move || run(conn, ids, rx, events, stats))
        .map(|_| ())
}

/// The writer's two connections to the same database, used one at a time by the writer thread.
/// Switching `PRAGMA synchronous` on one connection would expire (and force a re-parse of) every
/// cached statement, so each durability level gets its own connection instead.
pub(crate) struct WriteConns {
    /// See [`WriteCtx::push_live`]; read from the database at start.
    pub push_live: std::cell::Cell<bool>,
    /// `synchronous=FULL`: commits fsync before returning.
    pub durable: Connection,
    /// `synchronous=NORMAL`: for batches of cursor and pointer updates only.
    pub lazy: Connection,
}

/// How long a batch of lazy jobs (acks, reads, activity stamps) waits for a durable job to ride
/// along with. Under traffic a send arrives well within it, so pointer moves cost no commit of
/// their own and the lazy connection (whose commits would empty the durable connection's page
/// cache) stays idle; when all is quiet they commit alone, this much later.
const LAZY_HOLD: std::time::Duration = std::time::Duration::from_millis(4);

/// A batch this large when the writer comes back to the queue means jobs arrive faster than
/// commits finish...
const BUSY_BATCH: usize = 4;
/// ...and then the writer gathers for this much longer before committing.
const BUSY_GATHER: std::time::Duration = std::time::Duration::from_micros(500);

fn run(conns: WriteConns, ids: IdGen, mut rx: mpsc::Receiver<Msg>, events: EventSender, stats: Arc<WriterStats>) {
    // Only for the bounded wait on the queue while lazy jobs are held.
    let timer = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the writer's timer");
            return;
        }
    };
    let mut stop: Option<oneshot::Sender<()>> = None;
    let mut batch: Vec<Job> = Vec::with_capacity(64);
    while stop.is_none() {
        if batch.is_empty() {
            match rx.blocking_recv() {
                Some(msg) => take(msg, &mut batch, &mut stop),
                None => break,
            }
        }
        drain_ready(&mut rx, &mut batch, &mut stop);
        if !batch.iter().any(|j| j.durable) && stop.is_none() && batch.len() < MAX_BATCH {
            // Lazy jobs only: hold them until a durable job comes or the hold ends.
            let deadline = tokio::time::Instant::now() + LAZY_HOLD;
            while stop.is_none() && batch.len() < MAX_BATCH {
                match timer.block_on(async { tokio::time::timeout_at(deadline, rx.recv()).await }) {
                    Ok(Some(msg)) => {
                        let durable = matches!(&msg, Msg::Job(j) if j.durable);
                        take(msg, &mut batch, &mut stop);
                        if durable {
                            drain_ready(&mut rx, &mut batch, &mut stop);
                            break;
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        if batch.len() >= BUSY_BATCH && batch.iter().any(|j| j.durable) {
            // Under load, gather a little longer: most of a commit's cost is per commit (WAL page
            // writes, fsync), not per job. A lone client, whose batches are small, never waits.
            let deadline = tokio::time::Instant::now() + BUSY_GATHER;
            while stop.is_none() && batch.len() < MAX_BATCH {
                match timer.block_on(async { tokio::time::timeout_at(deadline, rx.recv()).await }) {
                    Ok(Some(msg)) => take(msg, &mut batch, &mut stop),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let conn = if batch.iter().any(|j| j.durable) { &conns.durable } else { &conns.lazy };
        commit_batch(conn, &conns.push_live, &ids, &mut batch, &events, &stats);
    }
    if !batch.is_empty() {
        commit_batch(&conns.durable, &conns.push_live, &ids, &mut batch, &events, &stats);
    }
    if let Err(e) = conns.durable.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
        tracing::warn!(error = %e, "final checkpoint failed");
    }
    drop(conns);
    if let Some(tx) = stop {
        let _ = tx.send(());
    }
}

fn take(msg: Msg, batch: &mut Vec<Job>, stop: &mut Option<oneshot::Sender<()>>) {
    match msg {
        Msg::Job(j) => batch.push(j),
        Msg::Stop(tx) => *stop = Some(tx),
    }
}

/// Adds whatever is already queued, up to the batch limit.
fn drain_ready(rx: &mut mpsc::Receiver<Msg>, batch: &mut Vec<Job>, stop: &mut Option<oneshot::Sender<()>>) {
    while stop.is_none() && batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(msg) => take(msg, batch, stop),
            Err(_) => break,
        }
    }
}

fn commit_batch(
    conn: &Connection,
    push_live: &std::cell::Cell<bool>,
    ids: &IdGen,
    batch: &mut Vec<Job>,
    events: &EventSender,
    stats: &WriterStats,
) {
    let started = std::time::Instant::now();
    let n = batch.len();
    if let Err(e) = run_cached(conn, "BEGIN IMMEDIATE") {
        // Dropping the jobs drops their answer channels: callers see the store as unavailable.
        batch.clear();
        tracing::error!(error = %e, "cannot start a write transaction");
        return;
    }
    let mut ctx =
        WriteCtx { conn, ids, events: Vec::new(), push_live, cursors: HashMap::new(), pointers: HashMap::new() };
    let mut finishes: Vec<Finish> = Vec::with_capacity(n);
    for job in batch.drain(..) {
        finishes.push(run_job(&mut ctx, job));
    }
    let result = ctx
        .flush_pointers()
        .and_then(|()| run_cached(conn, "COMMIT"))
        .map_err(|e| StoreError::Backend(format!("commit: {e}")));
    if let Err(e) = &result {
        tracing::error!(error = %e, batch = n, "write batch failed; rolling back");
        let _ = conn.execute_batch("ROLLBACK");
    } else if !ctx.events.is_empty() {
        // Published before anyone is answered, so a sender's `sent` never overtakes its fanout.
        // A closed receiver means the server is shutting down; the log still has everything.
        let _ = events.blocking_send(std::mem::take(&mut ctx.events));
    }
    for finish in finishes {
        finish(result.clone());
    }
    let micros = started.elapsed().as_micros() as u64;
    stats.batch_size.observe(n as u64);
    stats.commit_micros.observe(micros);
    tracing::trace!(batch = n, micros, "committed");
}

fn run_job(ctx: &mut WriteCtx<'_>, job: Job) -> Finish {
    if !job.durable {
        return (job.run)(ctx).0;
    }
    if let Err(e) = run_cached(ctx.conn, "SAVEPOINT job") {
        let err = StoreError::Backend(format!("savepoint: {e}"));
        tracing::error!(error = %err, "cannot open a savepoint");
        // Dropping the job drops its answer channel: the caller sees the store as unavailable.
        drop(job);
        return Box::new(|_| ());
    }
    let events_before = ctx.events.len();
    let (finish, ok) = (job.run)(ctx);
    let end =
        if ok { run_cached(ctx.conn, "RELEASE job") } else { ctx.conn.execute_batch("ROLLBACK TO job; RELEASE job") };
    if !ok {
        ctx.events.truncate(events_before);
    }
    if let Err(e) = end {
        tracing::error!(error = %e, "cannot close a savepoint");
    }
    finish
}

/// Runs a parameterless statement through the statement cache: the per-job savepoints and the
/// per-batch transaction would otherwise be parsed again every time.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

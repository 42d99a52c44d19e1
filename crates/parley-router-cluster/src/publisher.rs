//! The one task per node that sends to other nodes, so each destination gets frames in the
//! order they were queued.
//!
//! It takes everything queued (up to a batch), looks up every recipient of the batch's frames in
//! one Redis round trip, and publishes one NATS message per destination node holding all of that
//! node's frames of the batch, each with its recipients there: never one message per recipient.
//! Flush markers in the batch resolve after everything is published and NATS has flushed, unless
//! the connection dropped or a frame was dropped since the previous marker: then they fail, and
//! the caller treats what they cover as not delivered (the log still has it).
//!
//! Nothing here waits on a dependency that is down: while NATS is disconnected the batch is
//! dropped at once (markers fail), and after a failed directory lookup the next second's batches
//! go to every node without asking Redis.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parley_core::ids::UserId;
use tokio::sync::{mpsc, oneshot};

use crate::Inner;
use crate::wire::FrameBatch;
use parley_router::{Outbound, RouteError};

/// Queue items taken per round.
const BATCH: usize = 1024;
/// A node message is published once it holds this many bytes (NATS's default limit is 1 MiB).
const MAX_MESSAGE: usize = 256 * 1024;
/// How long a flush may take before its markers fail.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long JetStream may take to store a job.
const JOB_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one publish may wait for room in the client's queue.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long after a failed lookup the directory is not asked.
const DIRECTORY_BACKOFF: Duration = Duration::from_secs(1);

pub(crate) enum Outgoing {
    /// Frames for users, wherever they are. Local delivery already happened unless
    /// `include_self`: then this node's recipients get it through NATS too, in the order NATS
    /// gives it (how fanout jobs keep a conversation in order whichever node carries them out).
    Frames { users: Vec<UserId>, frame: Outbound, include_self: bool },
    /// A message for a subject every node listens to.
    Broadcast { subject: String, payload: Bytes },
    /// A durable fanout job; `done` resolves once JetStream stored it.
    Job { subject: String, id: String, payload: Bytes, done: oneshot::Sender<Result<(), RouteError>> },
    /// Resolves once everything queued before it has been published and flushed. `drops` is the
    /// dropped-frame count when it was queued.
    Flush { drops: u64, done: oneshot::Sender<Result<(), RouteError>> },
}

pub(crate) async fn run(inner: Arc<Inner>, mut rx: mpsc::Receiver<Outgoing>) {
    let mut buf = Vec::with_capacity(BATCH);
    // The dropped-frame count and connection epoch as of the last flush marker.
    let mut marker_drops = inner.stats.dropped.load(Ordering::SeqCst);
    let mut marker_epoch = inner.nats_epoch.load(Ordering::SeqCst);
    let mut skip_directory_until: Option<Instant> = None;
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut buf, BATCH) => n,
            _ = inner.cancel.cancelled() => 0,
        };
        if n == 0 {
            return;
        }
        if !matches!(inner.nats.connection_state(), async_nats::connection::State::Connected) {
            drop_batch(&inner, &mut buf);
            continue;
        }
        let mut flushes = Vec::new();
        let mut failure: Option<String> = None;
        let nodes = match skip_directory_until {
            Some(t) if Instant::now() < t => None,
            _ => {
                let nodes = lookup(&inner, &buf).await;
                skip_directory_until = nodes.is_none().then(|| Instant::now() + DIRECTORY_BACKOFF);
                nodes
            }
        };
        let mut batches: Vec<(String, FrameBatch)> = Vec::new();
        let mut everyone: Option<FrameBatch> = None;
        for item in buf.drain(..) {
            match item {
                Outgoing::Frames { users, frame, include_self } => match &nodes {
                    Some(map) => {
                        let me = (!include_self).then_some(inner.node.as_str());
                        for (node, users) in by_node(me, map, &users) {
                            let i = match batches.iter().position(|(n, _)| n == node) {
                                Some(i) => i,
                                None => {
                                    batches.push((node.to_owned(), FrameBatch::new(&inner.node)));
                                    batches.len() - 1
                                }
                            };
                            batches[i].1.push(&users, &frame);
                            if batches[i].1.len() >= MAX_MESSAGE {
                                let full = std::mem::replace(&mut batches[i].1, FrameBatch::new(&inner.node));
                                let subject = inner.subjects.node(node);
                                publish(&inner, subject, full.finish(), &mut failure).await;
                            }
                        }
                    }
                    // No directory: every node gets the frames and picks its own recipients (this
                    // one ignores its own broadcast, so it delivers here first).
                    None => {
                        if include_self {
                            parley_router::Router::deliver(&inner.local, &users, &frame);
                        }
                        let b = everyone.get_or_insert_with(|| FrameBatch::new(&inner.node));
                        b.push(&users, &frame);
                        if b.len() >= MAX_MESSAGE {
                            let full = std::mem::replace(b, FrameBatch::new(&inner.node));
                            publish(&inner, inner.subjects.all.clone(), full.finish(), &mut failure).await;
                        }
                    }
                },
                Outgoing::Broadcast { subject, payload } => {
                    match tokio::time::timeout(PUBLISH_TIMEOUT, inner.nats.publish(subject, payload)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            failure.get_or_insert(e.to_string());
                        }
                        Err(_) => {
                            failure.get_or_insert("publish timed out".to_owned());
                        }
                    }
                }
                Outgoing::Job { subject, id, payload, done } => job(&inner, subject, id, payload, done).await,
                Outgoing::Flush { drops, done } => flushes.push((drops, done)),
            }
        }
        for (node, batch) in batches {
            if !batch.is_empty() {
                publish(&inner, inner.subjects.node(&node), batch.finish(), &mut failure).await;
            }
        }
        if let Some(batch) = everyone.filter(|b| !b.is_empty()) {
            publish(&inner, inner.subjects.all.clone(), batch.finish(), &mut failure).await;
        }
        if flushes.is_empty() {
            continue;
        }
        match tokio::time::timeout(FLUSH_TIMEOUT, inner.nats.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(e.to_string());
            }
            Err(_) => {
                failure.get_or_insert("flush timed out".to_owned());
            }
        }
        let epoch = inner.nats_epoch.load(Ordering::SeqCst);
        if epoch != marker_epoch {
            failure.get_or_insert("the connection to NATS dropped".to_owned());
            marker_epoch = epoch;
        }
        for (drops, done) in flushes {
            let result = match &failure {
                Some(e) => Err(RouteError::Unavailable(e.clone())),
                None if drops != marker_drops => Err(RouteError::Unavailable("frames were dropped".into())),
                None => Ok(()),
            };
            marker_drops = drops;
            let _ = done.send(result);
        }
    }
}

/// The nodes of every recipient in the batch, in one round trip; `None` if Redis cannot say.
async fn lookup(inner: &Inner, items: &[Outgoing]) -> Option<HashMap<UserId, Vec<String>>> {
    let mut users: Vec<UserId> = items
        .iter()
        .filter_map(|o| match o {
            Outgoing::Frames { users, .. } => Some(users),
            _ => None,
        })
        .flatten()
        .copied()
        .collect();
    if users.is_empty() {
        return Some(HashMap::new());
    }
    users.sort_unstable();
    users.dedup();
    inner.stats.lookups.fetch_add(1, Ordering::Relaxed);
    match inner.dir.lookup(&users).await {
        Ok(map) => Some(map),
        Err(e) => {
            tracing::warn!(error = %e, "redis: directory lookup failed; sending to every node");
            None
        }
    }
}

/// Groups `users` by the nodes they are on (other than `skip`), in first-seen order.
fn by_node<'a>(
    skip: Option<&str>,
    map: &'a HashMap<UserId, Vec<String>>,
    users: &[UserId],
) -> Vec<(&'a str, Vec<UserId>)> {
    let mut out: Vec<(&'a str, Vec<UserId>)> = Vec::new();
    for u in users {
        for node in map.get(u).into_iter().flatten() {
            if Some(node.as_str()) == skip {
                continue;
            }
            match out.iter_mut().find(|(n, _)| *n == node.as_str()) {
                Some((_, v)) => v.push(*u),
                None => out.push((node.as_str(), vec![*u])),
            }
        }
    }
    out
}

async fn publish(inner: &Inner, subject: String, payload: Bytes, failure: &mut Option<String>) {
    match tokio::time::timeout(PUBLISH_TIMEOUT, inner.nats.publish(subject, payload)).await {
        Ok(Ok(())) => {
            inner.stats.published.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Err(e)) => {
            failure.get_or_insert(e.to_string());
        }
        Err(_) => {
            failure.get_or_insert("publish timed out".to_owned());
        }
    }
}

/// NATS is down: nothing in the batch can leave. Frames are dropped (their recipients resync
/// when this node's link is back, or read them from the log later), jobs and markers fail.
fn drop_batch(inner: &Inner, buf: &mut Vec<Outgoing>) {
    for item in buf.drain(..) {
        match item {
            Outgoing::Frames { .. } | Outgoing::Broadcast { .. } => {
                inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Outgoing::Job { done, .. } | Outgoing::Flush { done, .. } => {
                let _ = done.send(Err(RouteError::Unavailable("not connected to NATS".into())));
            }
        }
    }
}

/// Publishes a job in queue order; its acknowledgement is awaited beside, so jobs do not wait for
/// each other's round trips.
async fn job(
    inner: &Inner,
    subject: String,
    id: String,
    payload: Bytes,
    done: oneshot::Sender<Result<(), RouteError>>,
) {
    let publish = async_nats::jetstream::message::PublishMessage::build().payload(payload).message_id(id);
    match inner.js.send_publish(subject, publish).await {
        Ok(ack) => {
            inner.stats.jobs_published.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let result = match tokio::time::timeout(JOB_ACK_TIMEOUT, ack).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(RouteError::Unavailable(e.to_string())),
                    Err(_) => Err(RouteError::Unavailable("jetstream did not acknowledge the job".into())),
                };
                let _ = done.send(result);
            });
        }
        Err(e) => {
            let _ = done.send(Err(RouteError::Unavailable(e.to_string())));
        }
    }
}

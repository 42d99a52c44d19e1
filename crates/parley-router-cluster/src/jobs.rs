//! Durable fanout for large conversations: a JetStream work queue that every node consumes.
//!
//! A job is one message's frame and its recipients (computed by the committing node, so any
//! node can carry it out without the member list). It is stored in a file-backed work-queue
//! stream (one per cluster) before the sender hears `sent`. Jobs are spread over a few shards by
//! conversation, each with one durable pull consumer shared by all nodes and at most one job in
//! flight, so a conversation's messages go out in order whichever node takes them. A node
//! delivers a job through the router (local connections, then one message per other node),
//! waits for that to be flushed, and only then acknowledges it; if the node dies first,
//! JetStream hands the job to another node after `job_ack_wait`. Recipients may then see a
//! message twice, which connections drop by seq; none is lost.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use parley_core::ids::*;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::publisher::Outgoing;
use crate::{ClusterConfig, ClusterError, Inner, Subjects, wire};
use parley_router::{Outbound, RouteAck, RouteError};

/// Shards of the job queue: the most large-conversation messages fanned out at once.
pub(crate) const SHARDS: usize = 8;
/// Recipients handed to the router at a time before yielding to other tasks.
const CHUNK: usize = 128;
/// How long one pull waits for a job.
const PULL_WAIT: Duration = Duration::from_secs(2);

pub(crate) fn stream_name(cluster: &str) -> String {
    format!("PARLEY_FANOUT_{cluster}")
}

fn shard(conv: ConversationId) -> usize {
    ((conv.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % SHARDS
}

/// Creates the stream and its consumers if they are missing (every node does at start; the
/// first one wins).
pub(crate) async fn setup(
    js: &jetstream::Context,
    config: &ClusterConfig,
    subjects: &Subjects,
) -> Result<stream::Stream, ClusterError> {
    let stream = js
        .get_or_create_stream(stream::Config {
            name: stream_name(&config.cluster),
            subjects: vec![subjects.jobs()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            max_age: Duration::from_secs(24 * 3600),
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))?;
    for i in 0..SHARDS {
        consumer(&stream, subjects, config, i).await?;
    }
    Ok(stream)
}

/// Starts one consumer loop per shard.
pub(crate) fn start(inner: &Arc<Inner>, stream: stream::Stream) -> Vec<JoinHandle<()>> {
    (0..SHARDS).map(|i| tokio::spawn(consume(inner.clone(), stream.clone(), i))).collect()
}

/// Queues a job behind everything this node queued before (so a conversation's jobs keep their
/// order); the ack resolves once JetStream has stored it.
pub(crate) fn submit(inner: &Inner, conv: ConversationId, users: &[UserId], frame: &Outbound) -> RouteAck {
    let payload = wire::encode_job(conv, users, frame);
    // JetStream drops a repeat of the same id within its window (a retried send re-routed).
    let id = match frame.position {
        Some(p) => format!("{}:{}", p.conversation_id, p.seq),
        None => format!("{conv}:{}", rand::random::<u64>()),
    };
    let (done, rx) = oneshot::channel();
    let item = Outgoing::Job { subject: inner.subjects.job(shard(conv)), id, payload, done };
    if inner.out.try_send(item).is_err() {
        inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
        return Box::pin(std::future::ready(Err(RouteError::Unavailable("publish queue full".into()))));
    }
    Box::pin(async move { rx.await.unwrap_or_else(|_| Err(RouteError::Unavailable("the router stopped".into()))) })
}

async fn consumer(
    stream: &stream::Stream,
    subjects: &Subjects,
    config: &ClusterConfig,
    i: usize,
) -> Result<PullConsumer, ClusterError> {
    let name = format!("fanout-{i}");
    stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: subjects.job(i),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: config.job_ack_wait,
                // One job in flight per shard, cluster-wide: a conversation's jobs stay in order.
                max_ack_pending: 1,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))
}

async fn consume(inner: Arc<Inner>, stream: stream::Stream, i: usize) {
    let mut stream = Some(stream);
    let mut consumer = None;
    let mut epoch = inner.nats_epoch.load(Ordering::SeqCst);
    loop {
        if inner.cancel.is_cancelled() {
            return;
        }
        // After a reconnect the server may have lost its JetStream data: make sure the stream
        // and the consumer exist again.
        let now = inner.nats_epoch.load(Ordering::SeqCst);
        if now != epoch {
            epoch = now;
            stream = None;
            consumer = None;
        }
        let c = match &consumer {
            Some(c) => c,
            None => match consumer_or_wait(&inner, &mut stream, i).await {
                Some(c) => consumer.insert(c),
                None => continue,
            },
        };
        let batch = tokio::select! {
            b = c.fetch().max_messages(1).expires(PULL_WAIT).messages() => b,
            _ = inner.cancel.cancelled() => return,
        };
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(error = %e, shard = i, "jetstream: pull failed");
                consumer = None;
                pause(&inner).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                n = batch.next() => n,
                _ = inner.cancel.cancelled() => return,
            };
            match next {
                None => break,
                Some(Ok(msg)) => run(&inner, msg).await,
                Some(Err(e)) => {
                    // The consumer (or its stream) may be gone: look it up again.
                    tracing::debug!(error = %e, shard = i, "jetstream: pull ended");
                    consumer = None;
                    pause(&inner).await;
                    break;
                }
            }
        }
    }
}

/// The shard's consumer; if it (or the stream) is gone, as after a NATS server that lost its
/// JetStream data, both are made again.
async fn consumer_or_wait(inner: &Inner, stream: &mut Option<stream::Stream>, i: usize) -> Option<PullConsumer> {
    let result = match stream {
        Some(s) => consumer(s, &inner.subjects, &inner.config, i).await,
        None => match setup(&inner.js, &inner.config, &inner.subjects).await {
            Ok(s) => consumer(stream.insert(s), &inner.subjects, &inner.config, i).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, shard = i, "jetstream: no consumer");
            *stream = None;
            pause(inner).await;
            None
        }
    }
}

async fn pause(inner: &Inner) {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        _ = inner.cancel.cancelled() => {}
    }
}

/// Carries out one job: deliver, wait until it has left this node, then acknowledge. If it could
/// not leave, the job goes back to the queue for a later try.
async fn run(inner: &Inner, msg: jetstream::Message) {
    let Some((_conv, users, frame)) = wire::decode_job(&msg.payload) else {
        tracing::warn!("jetstream: a job that does not decode was dropped");
        let _ = msg.ack_with(AckKind::Term).await;
        return;
    };
    // Through NATS even for this node's recipients: the previous job of this shard was
    // published before it was acknowledged, so NATS hands every node that one first.
    for chunk in users.chunks(CHUNK) {
        inner.deliver_in_nats_order(chunk, &frame);
        tokio::task::yield_now().await;
    }
    match inner.flush().await {
        Ok(()) => {
            if let Err(e) = msg.double_ack().await {
                // JetStream will hand it out again: a repeat, which connections drop.
                tracing::debug!(error = %e, "jetstream: ack failed");
            }
            inner.stats.jobs_done.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::warn!(error = %e, "fanout job not delivered; it will be retried");
            let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
        }
    }
}

/// Deletes the cluster's job stream.
pub(crate) async fn purge(js: &jetstream::Context, cluster: &str) -> Result<(), ClusterError> {
    match js.delete_stream(stream_name(cluster)).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), jetstream::context::DeleteStreamErrorKind::JetStream(j) if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) => {
            Ok(())
        }
        Err(e) => Err(ClusterError::JetStream(e.to_string())),
    }
}

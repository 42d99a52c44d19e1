//! Fanout: turns the store's committed events into frames for the router, in commit order.
//!
//! Each message is encoded once and the same bytes are queued for every recipient connection.
//! Recipients come from the member cache ([`crate::members`]), which fanout invalidates when a
//! membership entry passes through, so a send never reads the member list from disk and a member
//! sees exactly the seqs of their membership. Conversations
//! above a size threshold fan out on a pool of workers in batches, so one 1,024-member send does
//! not hold up other conversations. Receipts are coalesced per conversation.
//!
//! In a cluster, this node's fanout sees only this node's commits. Large conversations then go to
//! the router's durable job queue instead of the local workers; a membership change is broadcast
//! so the other nodes drop their cached members; and since another node may have committed a
//! membership change between two entries this node commits, the cache is checked against the log
//! whenever entries by other nodes came in between ([`crate::members::MemberCache::for_seq`]). After each commit
//! batch, fanout asks the router to flush and reports the outcome to [`crate::routed`], which
//! holds the senders' `sent` until then.
//!
//! # In depth
//!
//! A message is encoded once into `Bytes`; every recipient's queue gets a reference. Up to
//! `fanout_worker_threshold` (64) recipients are delivered inline by the fanout task; larger
//! conversations go to one of `fanout_workers` tasks (always the same one for a conversation, so
//! its messages stay in order), which delivers in batches of 128 and yields between them, so a
//! 1,024-member send never holds up other conversations. The sender's `sent` does not wait for any
//! of this: it is answered when the commit is done.
//!
//! Receipts are two pointers per member (`delivered_seq`, `read_seq`) that the store's writer
//! moves from coalesced acks and reads; each move comes back as a `StoreEvent::Receipt`. Live
//! `receipt` frames go to conversations of up to 32 members, at most one per conversation per
//! 250 ms (`ReceiptThrottle`); larger groups read the counts from the receipts endpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parley_core::MessageKind;
use parley_core::ids::{ConversationId, Seq, UserId};
use parley_core::limits::RECEIPTS_LIVE_MAX_MEMBERS;
use parley_core::model::{Message, ReceiptChange};
use parley_proto::Id;
use parley_proto::frames::{Receipt, ServerFrame};
use parley_router::{LogPosition, Outbound, RouteAck, RouteError};
use parley_store::StoreEvent;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::convert;
use crate::members::Members;
use crate::metrics::Metrics;
use crate::state::App;

/// Recipients a worker hands to the router before yielding to other tasks.
const WORKER_BATCH: usize = 128;
/// Jobs queued per fanout worker before the fanout task waits.
const WORKER_QUEUE: usize = 1024;
/// `conversation` frames carry the member list up to this many members.
const CONVERSATION_FRAME_MEMBERS_MAX: i64 = 64;
/// Membership changes whose `conversation` frames are built at once (see `conversation_frames`).
const CONVERSATION_FRAME_JOBS: usize = 4;
/// Commit batches whose routing outcome is awaited at once.
const ACK_QUEUE: usize = 4096;
/// The longest one routing outcome is awaited.
const ACK_WAIT: Duration = Duration::from_secs(10);

pub(crate) async fn run(app: Arc<App>, mut events: mpsc::Receiver<Vec<StoreEvent>>) {
    // The tasks that live as long as this loop: the workers and the routing reporter. They are
    // this loop's own, so stopping fanout (aborting this future) stops them with it.
    let mut own = JoinSet::new();
    let workers = Workers::start(&app, &mut own);
    let views = Arc::new(Semaphore::new(CONVERSATION_FRAME_JOBS));
    // In a cluster: each commit batch's routing outcome, awaited in order beside this loop.
    let acks = app.routed.as_ref().map(|_| {
        let (tx, rx) = mpsc::channel(ACK_QUEUE);
        own.spawn(report_routing(app.clone(), rx));
        tx
    });
    let interval = Duration::from_millis(app.config.receipt_interval_ms.max(1));
    let mut receipts = ReceiptThrottle { interval, convs: HashMap::new() };
    let mut tick = tokio::time::interval(interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = events.recv() => {
                let Some(batch) = batch else { break };
                let mut routing = Routing::default();
                for event in batch {
                    match event {
                        StoreEvent::Message(m) => message(&app, &workers, &views, m, &mut routing).await,
                        StoreEvent::Pushes(d) => app.push.decided(d),
                        StoreEvent::Receipt(r) => {
                            if let Some(now) = receipts.offer(r) {
                                send_receipts(&app, r.conversation_id, &[now]).await;
                            }
                        }
                        StoreEvent::DeviceListChanged { user, list_version } => {
                            crate::e2ee::device_list_changed(&app, user, list_version)
                        }
                        StoreEvent::ToDevice(devices) => crate::e2ee::poke(&app, &devices),
                        StoreEvent::KeysLow { user, device, count } => crate::e2ee::keys_low(&app, user, device, count),
                    }
                }
                if let Some(acks) = &acks && !routing.messages.is_empty() {
                    routing.acks.push(app.router.flush());
                    // Never hold up fanout: if routing outcomes pile up, their senders time out
                    // (answered `unavailable`, the message stored) rather than every send stalling.
                    if acks.try_send(routing).is_err() {
                        tracing::warn!("routing outcomes are not keeping up");
                    }
                }
            }
            _ = tick.tick() => {
                for (conv, due) in receipts.due() {
                    send_receipts(&app, conv, &due).await;
                }
            }
        }
    }
}

/// What one commit batch handed to the router: its messages, and the acks that say they left.
#[derive(Default)]
struct Routing {
    messages: Vec<(ConversationId, Seq)>,
    acks: Vec<RouteAck>,
}

/// Awaits each batch's acks in commit order and tells the waiting senders.
async fn report_routing(app: Arc<App>, mut rx: mpsc::Receiver<Routing>) {
    let Some(routed) = app.routed.clone() else { return };
    while let Some(r) = rx.recv().await {
        let mut result = Ok(());
        for ack in r.acks {
            match tokio::time::timeout(ACK_WAIT, ack).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(RouteError::Unavailable("routing timed out".into())),
            }
        }
        if let Err(e) = &result {
            tracing::warn!(error = %e, messages = r.messages.len(), "messages committed but not routed");
        }
        routed.done(&r.messages, &result);
    }
}

fn encode(m: &Message) -> Outbound {
    Outbound {
        json: Bytes::from(ServerFrame::Message(&convert::message(m)).to_json()),
        position: Some(LogPosition {
            conversation_id: m.conversation_id,
            seq: m.seq,
            sender_device_id: m.sender_device_id,
        }),
        device: None,
    }
}

/// Routes a message again (a repeated send in a cluster, so the repeat's `sent` also means
/// routed) and resolves when it has left this node.
pub(crate) async fn route_again(app: &App, m: &Message) -> Result<(), RouteError> {
    let Some(members) = app.members.for_seq(m.conversation_id, m.seq).await else {
        return Err(RouteError::Unavailable("cannot load the members".into()));
    };
    let recipients = members.recipients(m.seq);
    let frame = encode(m);
    if recipients.len() > app.config.fanout_worker_threshold
        && let Some(ack) = app.router.deliver_durably(m.conversation_id, recipients.clone(), &frame)
    {
        return ack.await;
    }
    app.router.deliver(&recipients, &frame);
    app.router.flush().await
}

/// The user a `member_removed` or `member_left` entry takes out.
fn removed_user(m: &Message) -> Option<UserId> {
    m.system.as_ref().and_then(|s| s.removed_user())
}

async fn message(app: &Arc<App>, workers: &Workers, views: &Arc<Semaphore>, m: Message, routing: &mut Routing) {
    Metrics::inc(&app.metrics.messages_persisted);
    let changes = m.kind.changes_members();
    let removed = removed_user(&m);
    if changes {
        // The cache may predate this entry; windows make either version exact for older seqs,
        // and a fresh load is exact for this one.
        app.members.invalidate(m.conversation_id);
        if let Some(cluster) = &app.cluster {
            cluster.members_changed(m.conversation_id, removed);
        }
    }
    let members = match app.cluster {
        Some(_) => app.members.for_seq(m.conversation_id, m.seq).await,
        None => app.members.get(m.conversation_id).await,
    };
    // The message is committed whatever happens here; a sender waits for this entry either way.
    routing.messages.push((m.conversation_id, m.seq));
    let Some(members) = members else {
        routing.acks.push(Box::pin(std::future::ready(Err(RouteError::Unavailable("no members".into())))));
        return;
    };
    let recipients = members.recipients(m.seq);
    let frame = encode(&m);
    if recipients.len() > app.config.fanout_worker_threshold {
        // In a cluster, a durable job any node carries out; in process, the worker pool.
        match app
            .cluster
            .as_ref()
            .and_then(|_| app.router.deliver_durably(m.conversation_id, recipients.clone(), &frame))
        {
            Some(ack) => routing.acks.push(ack),
            None => workers.submit(m.conversation_id, frame, recipients).await,
        }
    } else {
        let started = Instant::now();
        app.router.deliver(&recipients, &frame);
        app.metrics.fanout.observe(started.elapsed().as_micros() as u64);
    }
    if changes || m.kind == MessageKind::TitleChanged {
        conversation_frames(app, views, m.conversation_id, members);
    }
    if let Some(user) = removed {
        // Presence and typing follow shared membership: recheck who may still watch whom.
        let presence = app.presence.clone();
        app.tasks.spawn(async move { presence.revalidate(user).await });
    }
}

/// Sends each current member their own view of the conversation (pointers and unread count
/// differ per member), off the fanout task so a large group does not hold up the others.
///
/// This is the one place a membership or title change turns into `conversation` frames. One
/// store call reads every member's view (a bounded number of queries, not one per member); at
/// most `CONVERSATION_FRAME_JOBS` changes are
/// worked on at once (`views`), later ones wait their turn in their own tracked task, so a burst
/// of changes cannot become a burst of thousands of concurrent reads.
fn conversation_frames(app: &Arc<App>, views: &Arc<Semaphore>, conv: ConversationId, members: Arc<Members>) {
    let (tasks, app, views) = (&app.tasks, app.clone(), views.clone());
    tasks.spawn(async move {
        // The semaphore is never closed, so acquiring fails only if it were.
        let Ok(_turn) = views.acquire_owned().await else { return };
        let users: Vec<UserId> = members.current().collect();
        let with_members = users.len() as i64 <= CONVERSATION_FRAME_MEMBERS_MAX;
        let views = match app.store.conversation_views(conv, &users, with_members).await {
            Ok(views) => views,
            Err(e) => {
                tracing::warn!(error = %e, conv = %conv, "cannot build conversation frames");
                return;
            }
        };
        for (user, view) in views {
            let json = ServerFrame::Conversation(&convert::conversation(&view)).to_json();
            app.router.deliver(&[user], &Outbound { json: Bytes::from(json), position: None, device: None });
        }
    });
}

async fn send_receipts(app: &Arc<App>, conv: ConversationId, changes: &[ReceiptChange]) {
    let Some(members) = app.members.get(conv).await else { return };
    let current: Vec<UserId> = members.current().collect();
    // Larger groups read the aggregate from the receipts endpoint instead.
    if current.len() as i64 > RECEIPTS_LIVE_MAX_MEMBERS {
        return;
    }
    for r in changes {
        let json = ServerFrame::Receipt(Receipt {
            conversation_id: Id(r.conversation_id.0),
            user_id: Id(r.user_id.0),
            delivered_seq: r.delivered_seq.0,
            read_seq: r.read_seq.0,
        })
        .to_json();
        app.router.deliver(&current, &Outbound { json: Bytes::from(json), position: None, device: None });
    }
}

/// At most one receipt push per conversation per interval: the first change goes out at once,
/// later ones within the interval are merged (pointers only grow, so the latest per member
/// carries the others) and go out when it ends.
struct ReceiptThrottle {
    interval: Duration,
    convs: HashMap<ConversationId, (Instant, HashMap<UserId, ReceiptChange>)>,
}

impl ReceiptThrottle {
    /// Returns the change if it may go out now; otherwise holds it.
    fn offer(&mut self, r: ReceiptChange) -> Option<ReceiptChange> {
        let now = Instant::now();
        let (last, pending) = self.convs.entry(r.conversation_id).or_insert((now - self.interval, HashMap::new()));
        if pending.is_empty() && now.duration_since(*last) >= self.interval {
            *last = now;
            return Some(r);
        }
        pending.insert(r.user_id, r);
        None
    }

    /// Held changes whose interval is over; forgets conversations that went quiet.
    fn due(&mut self) -> Vec<(ConversationId, Vec<ReceiptChange>)> {
        let now = Instant::now();
        let mut out = Vec::new();
        self.convs.retain(|&conv, (last, pending)| {
            if now.duration_since(*last) < self.interval {
                return true;
            }
            if pending.is_empty() {
                return now.duration_since(*last) < self.interval * 8;
            }
            *last = now;
            out.push((conv, pending.drain().map(|(_, r)| r).collect()));
            true
        });
        out
    }
}

/// The pool for large conversations. A conversation always maps to the same worker, so its
/// messages keep their order.
struct Workers {
    queues: Vec<mpsc::Sender<(Outbound, Vec<UserId>)>>,
}

impl Workers {
    fn start(app: &Arc<App>, tasks: &mut JoinSet<()>) -> Workers {
        let queues = (0..app.config.fanout_workers.max(1))
            .map(|_| {
                let (tx, mut rx) = mpsc::channel::<(Outbound, Vec<UserId>)>(WORKER_QUEUE);
                let app = app.clone();
                tasks.spawn(async move {
                    while let Some((frame, users)) = rx.recv().await {
                        let started = Instant::now();
                        for batch in users.chunks(WORKER_BATCH) {
                            app.router.deliver(batch, &frame);
                            tokio::task::yield_now().await;
                        }
                        app.metrics.fanout.observe(started.elapsed().as_micros() as u64);
                    }
                });
                tx
            })
            .collect();
        Workers { queues }
    }

    async fn submit(&self, conv: ConversationId, frame: Outbound, users: Vec<UserId>) {
        let i = (conv.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        let _ = self.queues[i as usize % self.queues.len()].send((frame, users)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(user: UserId, d: i64) -> ReceiptChange {
        ReceiptChange { conversation_id: ConversationId(1), user_id: user, delivered_seq: Seq(d), read_seq: Seq(0) }
    }

    #[test]
    fn receipts_are_coalesced_per_interval() {
        let mut t = ReceiptThrottle { interval: Duration::from_millis(40), convs: HashMap::new() };
        assert!(t.offer(change(UserId(7), 1)).is_some(), "the first goes out at once");
        assert!(t.offer(change(UserId(7), 2)).is_none());
        assert!(t.offer(change(UserId(7), 3)).is_none());
        assert!(t.offer(change(UserId(8), 3)).is_none());
        assert!(t.due().is_empty(), "held until the interval ends");
        std::thread::sleep(Duration::from_millis(45));
        let due = t.due();
        assert_eq!(due.len(), 1);
        let mut got: Vec<(UserId, i64)> = due[0].1.iter().map(|r| (r.user_id, r.delivered_seq.0)).collect();
        got.sort_unstable();
        assert_eq!(got, vec![(UserId(7), 3), (UserId(8), 3)], "the latest per member");
    }
}

//! Fanout: turns the store's committed events into frames for the router, in commit order.
//!
//! Each message is encoded once and the same bytes are queued for every recipient connection.
//! Recipients come from an in-memory cache of member windows (who may see which seqs), filled on
//! first use and dropped when a membership entry passes through, so a send never reads the
//! member list from disk and a member sees exactly the seqs of their membership. Conversations
//! above a size threshold fan out on a pool of workers in batches, so one 1,024-member send does
//! not hold up other conversations. Receipts are coalesced per conversation.
//!
//! In a cluster, this node's fanout sees only this node's commits. Large conversations then go to
//! the router's durable job queue instead of the local workers; a membership change is broadcast
//! so the other nodes drop their cached members; and since another node may have committed a
//! membership change between two entries this node commits, the cache is checked against the log
//! whenever entries by other nodes came in between (`MemberCache::for_seq`). After each commit
//! batch, fanout asks the router to flush and reports the outcome to [`crate::routed`], which
//! holds the senders' `sent` until then.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parley_core::MessageKind;
use parley_core::ids::{ConversationId, UserId};
use parley_core::limits::RECEIPTS_LIVE_MAX_MEMBERS;
use parley_core::model::{MemberWindow, Message, ReceiptChange};
use parley_proto::Id;
use parley_proto::frames::{Receipt, ServerFrame};
use parley_router::{LogPosition, Outbound, RouteAck, RouteError};
use parley_store::StoreEvent;
use tokio::sync::mpsc;

use crate::convert;
use crate::metrics::Metrics;
use crate::state::App;

/// Most conversations whose members are cached; past it the cache starts over.
const MEMBER_CACHE_MAX: usize = 100_000;
/// Recipients a worker hands to the router before yielding to other tasks.
const WORKER_BATCH: usize = 128;
/// Jobs queued per fanout worker before the fanout task waits.
const WORKER_QUEUE: usize = 1024;
/// `conversation` frames carry the member list up to this many members.
const CONVERSATION_FRAME_MEMBERS_MAX: i64 = 64;
/// Entries committed elsewhere that are read to check a cached member list, at most; past it the
/// list is simply reloaded.
const GAP_CHECK_MAX: i64 = 64;
/// Commit batches whose routing outcome is awaited at once.
const ACK_QUEUE: usize = 4096;
/// The longest one routing outcome is awaited.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// The member windows of one conversation.
pub struct Members {
    windows: Vec<MemberWindow>,
    /// The highest seq up to which these windows are known to be exact: every membership change
    /// at or below it is in them. Fanout moves it along with the entries it routes.
    upto: AtomicI64,
}

impl Members {
    fn new(windows: Vec<MemberWindow>, upto: i64) -> Self {
        // A list loaded from storage holds every change committed before the load, so at least
        // everything up to its latest boundary.
        let boundary = windows.iter().map(|w| w.left_seq.unwrap_or(w.joined_seq)).max().unwrap_or(0);
        Members { windows, upto: AtomicI64::new(upto.max(boundary)) }
    }

    /// Who may see `seq`.
    pub fn recipients(&self, seq: i64) -> Vec<UserId> {
        self.windows.iter().filter(|w| w.sees(seq)).map(|w| w.user_id).collect()
    }

    pub fn current(&self) -> impl Iterator<Item = UserId> + '_ {
        self.windows.iter().filter(|w| w.left_seq.is_none()).map(|w| w.user_id)
    }

    pub fn window(&self, user: UserId) -> Option<MemberWindow> {
        self.windows.iter().find(|w| w.user_id == user).copied()
    }
}

#[derive(Default)]
pub struct MemberCache {
    map: Mutex<HashMap<ConversationId, Arc<Members>>>,
}

impl MemberCache {
    pub async fn get(&self, app: &App, conv: ConversationId) -> Option<Arc<Members>> {
        if let Some(m) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&conv) {
            return Some(m.clone());
        }
        self.load(app, conv, 0).await
    }

    /// Loads `conv`'s members from storage (exact for every seq committed so far, `at` included).
    async fn load(&self, app: &App, conv: ConversationId, at: i64) -> Option<Arc<Members>> {
        let members = match app.store.member_windows(conv).await {
            Ok(windows) => Arc::new(Members::new(windows, at)),
            Err(e) => {
                tracing::error!(error = %e, conv, "cannot load members for fanout");
                return None;
            }
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MEMBER_CACHE_MAX {
            map.clear();
        }
        map.insert(conv, members.clone());
        Some(members)
    }

    /// The members exactly as of committed entry `seq`, in a cluster, where other nodes commit
    /// to the same conversation. If entries this node did not route lie between what the cached
    /// list is known to cover and `seq`, they are read from the log (or, past a few, the list is
    /// reloaded): a membership change among them means a reload. The broadcast invalidation
    /// usually gets here first; this closes the race with it.
    pub async fn for_seq(&self, app: &App, conv: ConversationId, seq: i64) -> Option<Arc<Members>> {
        let cached = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&conv).cloned();
        let Some(m) = cached else { return self.load(app, conv, seq).await };
        let upto = m.upto.load(Ordering::Acquire);
        if upto >= seq - 1 {
            m.upto.fetch_max(seq, Ordering::AcqRel);
            return Some(m);
        }
        if seq - 1 - upto <= GAP_CHECK_MAX
            && let Ok(between) = app.store.log_range(conv, upto, seq - 1, GAP_CHECK_MAX as u32).await
            && !between.iter().any(|e| changes_members(e.kind))
        {
            m.upto.fetch_max(seq, Ordering::AcqRel);
            return Some(m);
        }
        self.load(app, conv, seq).await
    }

    pub fn invalidate(&self, conv: ConversationId) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(&conv);
    }
}

pub async fn run(app: Arc<App>, mut events: mpsc::Receiver<Vec<StoreEvent>>) {
    let workers = Workers::start(&app);
    // In a cluster: each commit batch's routing outcome, awaited in order beside this loop.
    let acks = app.routed.as_ref().map(|_| {
        let (tx, rx) = mpsc::channel(ACK_QUEUE);
        tokio::spawn(report_routing(app.clone(), rx));
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
                        StoreEvent::Message(m) => message(&app, &workers, m, &mut routing).await,
                        StoreEvent::Receipt(r) => {
                            if let Some(now) = receipts.offer(r) {
                                send_receipts(&app, r.conversation_id, &[now]).await;
                            }
                        }
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
    messages: Vec<(ConversationId, i64)>,
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
    }
}

/// Routes a message again (a repeated send in a cluster, so the repeat's `sent` also means
/// routed) and resolves when it has left this node.
pub async fn route_again(app: &App, m: &Message) -> Result<(), RouteError> {
    let Some(members) = app.members.for_seq(app, m.conversation_id, m.seq).await else {
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

fn changes_members(kind: MessageKind) -> bool {
    kind.changes_members()
}

async fn message(app: &Arc<App>, workers: &Workers, m: Message, routing: &mut Routing) {
    Metrics::inc(&app.metrics.messages_persisted);
    let changes = changes_members(m.kind);
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
        Some(_) => app.members.for_seq(app, m.conversation_id, m.seq).await,
        None => app.members.get(app, m.conversation_id).await,
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
        let started = std::time::Instant::now();
        app.router.deliver(&recipients, &frame);
        app.metrics.fanout.observe(started.elapsed().as_micros() as u64);
    }
    if changes || m.kind == MessageKind::TitleChanged {
        conversation_frames(app, m.conversation_id, members).await;
    }
    if let Some(user) = removed {
        // Presence and typing follow shared membership: recheck who may still watch whom.
        let app = app.clone();
        tokio::spawn(async move { app.presence.revalidate(&app, user).await });
    }
}

/// Sends each current member their own view of the conversation (pointers and unread count
/// differ per member), off the fanout task so a large group does not hold up the others.
async fn conversation_frames(app: &Arc<App>, conv: ConversationId, members: Arc<Members>) {
    let app = app.clone();
    tokio::spawn(async move {
        let users: Vec<UserId> = members.current().collect();
        let with_members = users.len() as i64 <= CONVERSATION_FRAME_MEMBERS_MAX;
        let views = match app.store.conversation_views(conv, &users, with_members).await {
            Ok(views) => views,
            Err(e) => {
                tracing::warn!(error = %e, conv, "cannot build conversation frames");
                return;
            }
        };
        for (user, view) in views {
            let json = ServerFrame::Conversation(&convert::conversation(&view)).to_json();
            app.router.deliver(&[user], &Outbound { json: Bytes::from(json), position: None });
        }
    });
}

async fn send_receipts(app: &Arc<App>, conv: ConversationId, changes: &[ReceiptChange]) {
    let Some(members) = app.members.get(app, conv).await else { return };
    let current: Vec<UserId> = members.current().collect();
    // Larger groups read the aggregate from the receipts endpoint instead.
    if current.len() as i64 > RECEIPTS_LIVE_MAX_MEMBERS {
        return;
    }
    for r in changes {
        let json = ServerFrame::Receipt(Receipt {
            conversation_id: Id(r.conversation_id),
            user_id: Id(r.user_id),
            delivered_seq: r.delivered_seq,
            read_seq: r.read_seq,
        })
        .to_json();
        app.router.deliver(&current, &Outbound { json: Bytes::from(json), position: None });
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
    fn start(app: &Arc<App>) -> Workers {
        let queues = (0..app.config.fanout_workers.max(1))
            .map(|_| {
                let (tx, mut rx) = mpsc::channel::<(Outbound, Vec<UserId>)>(WORKER_QUEUE);
                let app = app.clone();
                tokio::spawn(async move {
                    while let Some((frame, users)) = rx.recv().await {
                        let started = std::time::Instant::now();
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
        let i = (conv as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        let _ = self.queues[i as usize % self.queues.len()].send((frame, users)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(user: UserId, d: i64) -> ReceiptChange {
        ReceiptChange { conversation_id: 1, user_id: user, delivered_seq: d, read_seq: 0 }
    }

    #[test]
    fn receipts_are_coalesced_per_interval() {
        let mut t = ReceiptThrottle { interval: Duration::from_millis(40), convs: HashMap::new() };
        assert!(t.offer(change(7, 1)).is_some(), "the first goes out at once");
        assert!(t.offer(change(7, 2)).is_none());
        assert!(t.offer(change(7, 3)).is_none());
        assert!(t.offer(change(8, 3)).is_none());
        assert!(t.due().is_empty(), "held until the interval ends");
        std::thread::sleep(Duration::from_millis(45));
        let due = t.due();
        assert_eq!(due.len(), 1);
        let mut got: Vec<(UserId, i64)> = due[0].1.iter().map(|r| (r.user_id, r.delivered_seq)).collect();
        got.sort_unstable();
        assert_eq!(got, vec![(7, 3), (8, 3)], "the latest per member");
    }

    #[test]
    fn windows_pick_recipients() {
        let m = Members::new(
            vec![
                MemberWindow { user_id: 1, joined_seq: 1, left_seq: None },
                MemberWindow { user_id: 2, joined_seq: 1, left_seq: Some(5) },
                MemberWindow { user_id: 3, joined_seq: 8, left_seq: None },
            ],
            0,
        );
        assert_eq!(m.upto.load(Ordering::Relaxed), 8, "exact up to its latest boundary");
        assert_eq!(m.recipients(5), vec![1, 2]);
        assert_eq!(m.recipients(6), vec![1]);
        assert_eq!(m.recipients(8), vec![1, 3]);
        assert_eq!(m.current().collect::<Vec<_>>(), vec![1, 3]);
    }
}

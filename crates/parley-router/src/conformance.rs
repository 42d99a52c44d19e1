//! The router conformance suite: what every [`Router`](crate::Router) promises, checked through
//! the trait only, against three nodes of one deployment (for the in-process router, three names
//! for the same router). A router crate stamps the whole list out in its own tests with
//! [`router_conformance!`](crate::router_conformance) (compiled only with the `conformance`
//! feature), like the store's suite.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parley_core::ids::{ConversationId, DeviceId, Seq, UserId};
use tokio::sync::mpsc;

use crate::{ConnHandle, Kick, LogPosition, Outbound, Router};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a test watches for something that should not happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// Three nodes of one deployment.
pub struct Nodes {
    pub a: Arc<dyn Router>,
    pub b: Arc<dyn Router>,
    pub c: Arc<dyn Router>,
    /// Whether the nodes are separate routers (frames cross between them), so per-node counters
    /// mean something.
    pub distributed: bool,
}

impl Nodes {
    pub fn distributed(&self) -> bool {
        self.distributed
    }
}

/// A router implementation under test: the nodes it made, and what to do afterwards (stop them,
/// delete what they left in shared services).
pub trait Harness: Send + 'static {
    fn nodes(&self) -> Nodes;
    fn cleanup(self) -> impl Future<Output = ()> + Send;
}

/// Declares every router conformance test once, for the harness `$make` (a future giving a
/// [`Harness`]) sets up. The one list of the suite's tests lives here.
#[macro_export]
macro_rules! router_conformance {
    ($make:expr) => {
        $crate::router_conformance!(@tests $make;
            delivers_to_local_connections,
            delivers_to_every_node_a_user_is_on,
            one_node_message_per_node_not_per_recipient,
            keeps_order_per_recipient,
            unregistered_connections_get_nothing,
            a_full_queue_kicks_wherever_it_is,
            kicks_only_the_named_device_on_any_node,
            online_anywhere_is_online_everywhere,
            flush_resolves_after_delivery,
            durable_delivery_reaches_everyone,
            counts_only_this_nodes_connections,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let h = $make.await;
                let nodes = $crate::conformance::Harness::nodes(&h);
                $crate::conformance::$name(&nodes).await;
                $crate::conformance::Harness::cleanup(h).await;
            }
        )*
    };
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// A fake connection: its handle and what reaches it.
pub struct Conn {
    pub handle: ConnHandle,
    pub frames: mpsc::Receiver<Outbound>,
    pub kicks: mpsc::Receiver<Kick>,
}

impl Conn {
    pub fn new(user: i64, device: i64, queue: usize) -> Conn {
        let (user, device) = (UserId(user), DeviceId(device));
        let (frames_tx, frames) = mpsc::channel(queue);
        let (kicks_tx, kicks) = mpsc::channel(8);
        let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        Conn {
            handle: ConnHandle { id, user_id: user, device_id: device, frames: frames_tx, kicks: kicks_tx },
            frames,
            kicks,
        }
    }

    /// Registers on `router` and waits until every node can reach it.
    pub async fn on(router: &Arc<dyn Router>, user: i64, device: i64) -> Conn {
        let c = Conn::new(user, device, 1024);
        router.register(c.handle.clone()).await;
        c
    }

    pub async fn next(&mut self) -> Outbound {
        tokio::time::timeout(WAIT, self.frames.recv()).await.expect("a frame in time").expect("open")
    }

    pub async fn nothing(&mut self) {
        if let Ok(Some(f)) = tokio::time::timeout(QUIET, self.frames.recv()).await {
            panic!("unexpected frame {:?}", f.json);
        }
    }

    pub async fn kick(&mut self) -> Kick {
        tokio::time::timeout(WAIT, self.kicks.recv()).await.expect("a kick in time").expect("open")
    }

    /// Waits for a kick of this kind, skipping others (resyncs after reconnects, say).
    pub async fn kick_of(&mut self, want: Kick) {
        loop {
            if self.kick().await == want {
                return;
            }
        }
    }

    pub async fn no_kick(&mut self) {
        if let Ok(Some(k)) = tokio::time::timeout(QUIET, self.kicks.recv()).await {
            panic!("unexpected kick {k:?}");
        }
    }
}

pub fn frame(text: &str) -> Outbound {
    Outbound { json: Bytes::from(text.to_owned()), position: None, device: None }
}

pub fn message(conv: i64, seq: i64) -> Outbound {
    let conv = ConversationId(conv);
    Outbound {
        json: Bytes::from(format!("{{\"conversation_id\":\"{conv}\",\"seq\":{seq}}}")),
        position: Some(LogPosition { conversation_id: conv, seq: Seq(seq), sender_device_id: None }),
        device: None,
    }
}

/// Users by number, as the tests name them.
pub fn u(ids: &[i64]) -> Vec<UserId> {
    ids.iter().map(|&i| UserId(i)).collect()
}

/// Polls `check` until it holds or the wait runs out.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn delivers_to_local_connections(n: &Nodes) {
    let mut x = Conn::on(&n.a, 10, 100).await;
    let mut y = Conn::on(&n.a, 20, 200).await;
    n.a.deliver(&u(&[10]), &frame("hello"));
    assert_eq!(&x.next().await.json[..], b"hello");
    y.nothing().await;
}

pub async fn delivers_to_every_node_a_user_is_on(n: &Nodes) {
    // User 10 has a device on a and one on b; user 20 one on c; user 30 is offline.
    let mut x1 = Conn::on(&n.a, 10, 100).await;
    let mut x2 = Conn::on(&n.b, 10, 101).await;
    let mut y = Conn::on(&n.c, 20, 200).await;
    let mut z = Conn::on(&n.c, 40, 400).await;
    let f = message(1, 1);
    n.a.deliver(&u(&[10, 20, 30]), &f);
    for c in [&mut x1, &mut x2, &mut y] {
        let got = c.next().await;
        assert_eq!(got.json, f.json);
        assert_eq!(got.position, f.position, "the log position travels with the frame");
    }
    z.nothing().await;
    x1.nothing().await;
}

pub async fn one_node_message_per_node_not_per_recipient(n: &Nodes) {
    let mut on_b = Vec::new();
    let mut on_c = Vec::new();
    for u in 0..25 {
        on_b.push(Conn::on(&n.b, 1000 + u, 10_000 + u).await);
        on_c.push(Conn::on(&n.c, 2000 + u, 20_000 + u).await);
    }
    let users: Vec<i64> = (0..25).flat_map(|u| [1000 + u, 2000 + u]).collect();
    n.a.flush().await.unwrap();
    let before = n.a.stats();
    let before_b = n.b.stats();
    n.a.deliver(&u(&users), &frame("to fifty people"));
    n.a.flush().await.unwrap();
    for c in on_b.iter_mut().chain(on_c.iter_mut()) {
        assert_eq!(&c.next().await.json[..], b"to fifty people");
    }
    let after = n.a.stats();
    if n.distributed() {
        assert_eq!(after.node_messages_published - before.node_messages_published, 2, "one per destination node");
        assert_eq!(n.b.stats().node_messages_received - before_b.node_messages_received, 1);
        assert_eq!(after.directory_lookups - before.directory_lookups, 1, "one batched lookup");
    } else {
        assert_eq!(after, before, "the in-process router has nothing to publish");
    }
}

pub async fn keeps_order_per_recipient(n: &Nodes) {
    let mut x = Conn::on(&n.b, 10, 100).await;
    let mut y = Conn::on(&n.a, 20, 200).await;
    for seq in 1..=200 {
        n.a.deliver(&u(&[10, 20]), &message(7, seq));
    }
    for c in [&mut x, &mut y] {
        for seq in 1..=200 {
            assert_eq!(c.next().await.position.unwrap().seq, Seq(seq));
        }
    }
}

pub async fn unregistered_connections_get_nothing(n: &Nodes) {
    let mut x = Conn::on(&n.b, 10, 100).await;
    let mut keep = Conn::on(&n.b, 10, 101).await;
    n.b.unregister(UserId(10), x.handle.id);
    n.a.deliver(&u(&[10]), &frame("after"));
    assert_eq!(&keep.next().await.json[..], b"after");
    x.nothing().await;
    assert_eq!(n.b.connection_count(), 1);
}

pub async fn a_full_queue_kicks_wherever_it_is(n: &Nodes) {
    let slow = Conn::new(10, 100, 2);
    n.b.register(slow.handle.clone()).await;
    let mut slow = slow;
    for i in 0..3 {
        n.a.deliver(&u(&[10]), &frame(&format!("f{i}")));
    }
    assert_eq!(slow.kick().await, Kick::TooSlow);
}

pub async fn kicks_only_the_named_device_on_any_node(n: &Nodes) {
    let mut keep = Conn::on(&n.b, 10, 100).await;
    let mut gone = Conn::on(&n.c, 10, 101).await;
    n.a.kick_device(UserId(10), DeviceId(101), Kick::Revoked);
    assert_eq!(gone.kick().await, Kick::Revoked);
    keep.no_kick().await;
}

pub async fn online_anywhere_is_online_everywhere(n: &Nodes) {
    assert!(!n.a.is_online(UserId(10)).await);
    let x = Conn::on(&n.b, 10, 100).await;
    assert!(n.a.is_online(UserId(10)).await);
    assert!(n.b.is_online(UserId(10)).await);
    n.b.unregister(UserId(10), x.handle.id);
    // A node applies its directory changes in order and a registration resolves once applied, so
    // when a later one on the same node is in, the departure is too (the test nodes have no
    // presence grace period: offline at once).
    let _later = Conn::on(&n.b, 11, 110).await;
    assert!(!n.a.is_online(UserId(10)).await);
    assert!(!n.b.is_online(UserId(10)).await);
}

pub async fn flush_resolves_after_delivery(n: &Nodes) {
    let mut x = Conn::on(&n.b, 10, 100).await;
    n.a.deliver(&u(&[10]), &frame("one"));
    n.a.flush().await.expect("flushed");
    assert_eq!(&x.next().await.json[..], b"one");
}

pub async fn durable_delivery_reaches_everyone(n: &Nodes) {
    let mut conns = Vec::new();
    for u in 0..10 {
        let node = [&n.a, &n.b, &n.c][u as usize % 3];
        conns.push(Conn::on(node, 100 + u, 1000 + u).await);
    }
    let users: Vec<i64> = (100..110).collect();
    let frames: Vec<_> = (1..=5).map(|seq| message(9, seq)).collect();
    for f in &frames {
        match n.a.deliver_durably(ConversationId(9), u(&users), f) {
            Some(ack) => ack.await.expect("job stored"),
            // No durable queue: the caller delivers.
            None => n.a.deliver(&u(&users), f),
        }
    }
    for c in &mut conns {
        for seq in 1..=5 {
            assert_eq!(c.next().await.position.unwrap().seq, Seq(seq), "in order");
        }
    }
}

pub async fn counts_only_this_nodes_connections(n: &Nodes) {
    let _x = Conn::on(&n.a, 10, 100).await;
    let _y = Conn::on(&n.b, 20, 200).await;
    let _z = Conn::on(&n.b, 20, 201).await;
    if n.distributed() {
        assert_eq!((n.a.connection_count(), n.b.connection_count(), n.c.connection_count()), (1, 2, 0));
    } else {
        assert_eq!(n.a.connection_count(), 3);
    }
}

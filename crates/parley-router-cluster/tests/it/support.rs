//! Test nodes and connections: a set of routers acting as the nodes of one cluster (for the
//! in-process router, the same router under every name), and fake connections to watch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parley_core::ids::*;
use parley_router::{ConnHandle, Kick, LocalRouter, LogPosition, Outbound, Router};
use parley_router_cluster::{ClusterConfig, ClusterRouter};
use tokio::sync::mpsc;

/// How long a test waits for something that should happen.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// How long a test watches for something that should not happen.
pub(crate) const QUIET: Duration = Duration::from_millis(300);

pub(crate) fn nats_url() -> String {
    std::env::var("PARLEY_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

pub(crate) fn redis_url() -> String {
    std::env::var("PARLEY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A cluster name no other test run uses.
pub(crate) fn cluster_name() -> String {
    format!("t{:016x}", rand::random::<u64>())
}

/// Settings for a test node: short timers so expiry is quick.
pub(crate) fn config(cluster: &str, node: &str) -> ClusterConfig {
    let mut c = ClusterConfig::new(&nats_url(), &redis_url(), cluster, node);
    c.presence_grace = Duration::ZERO;
    c.directory_ttl = Duration::from_millis(1500);
    c.refresh_interval = Duration::from_millis(400);
    c.sweep_interval = Duration::from_millis(200);
    c.job_ack_wait = Duration::from_secs(2);
    c
}

/// Three nodes of one cluster.
pub(crate) struct Nodes {
    pub a: Arc<dyn Router>,
    pub b: Arc<dyn Router>,
    pub c: Arc<dyn Router>,
    /// The cluster routers behind them, when it is a cluster.
    pub cluster: Option<(String, [Arc<ClusterRouter>; 3])>,
}

impl Nodes {
    pub(crate) async fn local() -> Nodes {
        let r: Arc<dyn Router> = Arc::new(LocalRouter::new());
        Nodes { a: r.clone(), b: r.clone(), c: r, cluster: None }
    }

    pub(crate) async fn cluster() -> Nodes {
        let name = cluster_name();
        let mut routers = Vec::new();
        for node in ["a", "b", "c"] {
            routers.push(Arc::new(ClusterRouter::connect(config(&name, node)).await.expect("cluster router")));
        }
        let routers: [Arc<ClusterRouter>; 3] = routers.try_into().ok().unwrap();
        Nodes { a: routers[0].clone(), b: routers[1].clone(), c: routers[2].clone(), cluster: Some((name, routers)) }
    }

    pub(crate) fn distributed(&self) -> bool {
        self.cluster.is_some()
    }

    pub(crate) async fn cleanup(self) {
        if let Some((name, routers)) = self.cluster {
            stop_and_purge(&name, &routers, &nats_url(), &redis_url()).await;
        }
    }
}

/// Stops the nodes and waits for their tasks to end, then deletes the cluster's keys and stream.
pub(crate) async fn stop_and_purge(name: &str, routers: &[Arc<ClusterRouter>], nats: &str, redis: &str) {
    for r in routers {
        r.halt_and_wait().await;
    }
    ClusterRouter::purge(nats, redis, name).await.expect("purge");
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// A fake connection: its handle and what reaches it.
pub(crate) struct Conn {
    pub handle: ConnHandle,
    pub frames: mpsc::Receiver<Outbound>,
    pub kicks: mpsc::Receiver<Kick>,
}

impl Conn {
    pub(crate) fn new(user: i64, device: i64, queue: usize) -> Conn {
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
    pub(crate) async fn on(router: &Arc<dyn Router>, user: i64, device: i64) -> Conn {
        let c = Conn::new(user, device, 1024);
        router.register(c.handle.clone()).await;
        c
    }

    pub(crate) async fn next(&mut self) -> Outbound {
        tokio::time::timeout(WAIT, self.frames.recv()).await.expect("a frame in time").expect("open")
    }

    pub(crate) async fn nothing(&mut self) {
        if let Ok(Some(f)) = tokio::time::timeout(QUIET, self.frames.recv()).await {
            panic!("unexpected frame {:?}", f.json);
        }
    }

    pub(crate) async fn kick(&mut self) -> Kick {
        tokio::time::timeout(WAIT, self.kicks.recv()).await.expect("a kick in time").expect("open")
    }

    /// Waits for a kick of this kind, skipping others (resyncs after reconnects, say).
    pub(crate) async fn kick_of(&mut self, want: Kick) {
        loop {
            if self.kick().await == want {
                return;
            }
        }
    }

    pub(crate) async fn no_kick(&mut self) {
        if let Ok(Some(k)) = tokio::time::timeout(QUIET, self.kicks.recv()).await {
            panic!("unexpected kick {k:?}");
        }
    }
}

pub(crate) fn frame(text: &str) -> Outbound {
    Outbound { json: Bytes::from(text.to_owned()), position: None }
}

pub(crate) fn message(conv: i64, seq: i64) -> Outbound {
    let conv = ConversationId(conv);
    Outbound {
        json: Bytes::from(format!("{{\"conversation_id\":\"{conv}\",\"seq\":{seq}}}")),
        position: Some(LogPosition { conversation_id: conv, seq: Seq(seq), sender_device_id: None }),
    }
}

/// Users by number, as the tests name them.
pub(crate) fn u(ids: &[i64]) -> Vec<UserId> {
    ids.iter().map(|&i| UserId(i)).collect()
}

/// Polls `check` until it holds or the wait runs out.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
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

//! Dependencies that go away and come back: a private `redis-server` or `nats-server` on a free
//! port, stopped and restarted under two nodes, which must carry on without a restart of their own.

use parley_core::ids::{ConversationId, Seq, UserId};
use std::sync::Arc;
use std::time::Duration;

use parley_router::{Kick, Router};
use parley_router_cluster::ClusterRouter;
use tokio::process::{Child, Command};

use crate::support::*;

/// A private server on a free port that a test can stop and start again.
struct Service {
    kind: &'static str,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Service {
    async fn start(kind: &'static str) -> Service {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut s = Service { kind, port, dir: tempfile::tempdir().unwrap(), child: None };
        s.spawn().await;
        s
    }

    fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.kind, self.port)
    }

    async fn spawn(&mut self) {
        let mut cmd = match self.kind {
            "nats" => {
                let mut c = Command::new("nats-server");
                c.args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"]).arg(self.dir.path());
                c
            }
            _ => {
                let mut c = Command::new("redis-server");
                c.args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"]);
                c
            }
        };
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).kill_on_drop(true);
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("start {}: {e}", self.kind)));
        eventually("the service listens", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok()
        })
        .await;
    }

    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}

async fn nodes(nats: &str, redis: &str) -> (String, Arc<ClusterRouter>, Arc<ClusterRouter>) {
    let name = cluster_name();
    let mut nodes = Vec::new();
    for node in ["a", "b"] {
        let mut c = config(&name, node);
        c.nats_url = nats.to_owned();
        c.redis_url = redis.to_owned();
        nodes.push(Arc::new(ClusterRouter::connect(c).await.expect("connect")));
    }
    let b = nodes.pop().unwrap();
    (name, nodes.pop().unwrap(), b)
}

/// Delivers from `from` until `conn` gets a frame (each try a new seq), within the wait.
async fn until_delivered(from: &Arc<dyn Router>, user: i64, conn: &mut Conn) {
    for seq in 1..200 {
        from.deliver(&u(&[user]), &message(42, seq));
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), conn.frames.recv()).await {
            return;
        }
    }
    panic!("nothing got through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_no_delivery_and_nodes_re_register() {
    let mut redis = Service::start("redis").await;
    let (name, a, b) = nodes(&nats_url(), &redis.url()).await;
    let (ra, rb): (Arc<dyn Router>, Arc<dyn Router>) = (a.clone(), b.clone());
    let mut x = Conn::on(&rb, 10, 100).await;

    // Redis is gone: frames go to every node instead, so delivery goes on.
    redis.stop().await;
    ra.deliver(&u(&[10]), &frame("without redis"));
    assert_eq!(&x.next().await.json[..], b"without redis");
    assert!(ra.probe().await.iter().any(|p| p.dependency == "redis" && p.result.is_err()));

    // It comes back empty. b notices at its next refresh, writes its entry again, and has its
    // connections resync (frames may have been missed while nobody could find them).
    redis.spawn().await;
    x.kick_of(Kick::Resync).await;
    until_delivered(&ra, 10, &mut x).await;
    eventually("both probes answer", || async { ra.probe().await.iter().all(|p| p.result.is_ok()) }).await;
    // Routed through the directory again: one message to b, none to anyone else.
    ra.flush().await.ok();
    let before = ra.stats();
    ra.deliver(&u(&[10]), &frame("with redis"));
    ra.flush().await.expect("flushed");
    while x.next().await.json != "with redis" {}
    assert_eq!(ra.stats().node_messages_published - before.node_messages_published, 1);
    assert!(ra.is_online(UserId(10)).await, "presence is back too");

    stop_and_purge(&name, &[a, b], &nats_url(), &redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_fails_flushes_then_recovers_with_a_resync() {
    let mut nats = Service::start("nats").await;
    let (name, a, b) = nodes(&nats.url(), &redis_url()).await;
    let (ra, rb): (Arc<dyn Router>, Arc<dyn Router>) = (a.clone(), b.clone());
    let mut x = Conn::on(&rb, 10, 100).await;
    let mut local = Conn::on(&ra, 20, 200).await;
    ra.deliver(&u(&[10]), &frame("before"));
    assert_eq!(&x.next().await.json[..], b"before");

    nats.stop().await;
    // Local delivery goes on; nothing can promise delivery elsewhere.
    ra.deliver(&u(&[10, 20]), &frame("during"));
    assert_eq!(&local.next().await.json[..], b"during");
    eventually("a flush fails while NATS is down", || async { ra.flush().await.is_err() }).await;
    assert!(ra.probe().await.iter().any(|p| p.dependency == "nats" && p.result.is_err()));

    // It comes back having lost its JetStream data too.
    for entry in std::fs::read_dir(nats.dir.path()).unwrap() {
        let _ = std::fs::remove_dir_all(entry.unwrap().path());
    }
    nats.spawn().await;
    // Both nodes reconnect by themselves; b's connection resyncs from the log.
    x.kick_of(Kick::Resync).await;
    local.kick_of(Kick::Resync).await;
    until_delivered(&ra, 10, &mut x).await;
    eventually("flushes promise delivery again", || async { ra.flush().await.is_ok() }).await;
    // The job stream is made again, and durable fanout works.
    let mut n = 1000;
    eventually("a job is stored", || {
        n += 1;
        let ack = ra.deliver_durably(ConversationId(42), vec![UserId(10)], &message(42, n)).unwrap();
        async move { ack.await.is_ok() }
    })
    .await;
    loop {
        if x.next().await.position.is_some_and(|p| p.seq > Seq(1000)) {
            break;
        }
    }

    stop_and_purge(&name, &[a, b], &nats.url(), &redis_url()).await;
}

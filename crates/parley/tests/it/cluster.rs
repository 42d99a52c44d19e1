//! Cluster mode end to end: three `parley serve` processes on one PostgreSQL database, one NATS
//! and one Redis, and PROTOCOL.md's guarantees holding across them — delivery, receipts,
//! multi-device, presence and typing between nodes, and nothing acknowledged lost when a node is
//! killed, when NATS or Redis restarts, or when every node is restarted in turn.
//!
//! Each test gets its own database and cluster name (the prefix of its NATS subjects and Redis
//! keys), so runs never collide. The fault tests run their own `nats-server` and `redis-server`
//! on free ports, since restarting the machine's shared ones would disturb other tests.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use parley_client::{ConnectOptions, Connection, Event};
use parley_proto::Id;
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::harness::*;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.into())
}

fn postgres_admin_url() -> String {
    env_or("PARLEY_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")
}

/// A database made for one test and dropped after it.
struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    async fn create() -> TestDatabase {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name =
            format!("parley_it_{}_{}_{:08x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), rand_u32());
        let (client, conn) =
            tokio_postgres::connect(&postgres_admin_url(), tokio_postgres::NoTls).await.expect("PARLEY_TEST_POSTGRES");
        tokio::spawn(conn);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create the test database");
        let admin = postgres_admin_url();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        TestDatabase { url: format!("{base}/{name}"), name }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Best effort, on a thread of its own: Drop cannot await, and the runtime may be gone.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&postgres_admin_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            });
        })
        .join();
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish() as u32
}

/// A private `nats-server` (JetStream on) or `redis-server` on a free port, for the tests that
/// restart one. Killed on drop.
struct Service {
    kind: &'static str,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Service {
    async fn nats() -> Service {
        Service::start("nats").await
    }

    async fn redis() -> Service {
        Service::start("redis").await
    }

    async fn start(kind: &'static str) -> Service {
        let dir = tempfile::Builder::new().prefix("parley-svc-").tempdir().expect("temp dir");
        let mut s = Service { kind, port: free_port(), dir, child: None };
        s.spawn().await;
        s
    }

    fn url(&self) -> String {
        match self.kind {
            "nats" => format!("nats://127.0.0.1:{}", self.port),
            _ => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    async fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut cmd = match self.kind {
            "nats" => {
                let mut c = Command::new("nats-server");
                c.args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"]).arg(self.dir.path());
                c
            }
            _ => {
                let mut c = Command::new("redis-server");
                c.args(["--bind", "127.0.0.1", "--port", &port, "--save", "", "--appendonly", "no"]);
                c
            }
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("start {}: {e} (is it installed?)", self.kind)));
        // Ready when it accepts connections.
        let deadline = tokio::time::Instant::now() + T;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "{} did not start on {}", self.kind, self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops it (as a crash would), keeps it down for `down`, then starts it again on the same
    /// port (NATS keeps its JetStream data; Redis comes back empty, as it is configured here).
    async fn restart(&mut self, down: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        tokio::time::sleep(down).await;
        self.spawn().await;
    }
}

/// Three (or N) nodes of one cluster.
struct Cluster {
    nodes: Vec<TestServer>,
    _db: TestDatabase,
    name: String,
    nats: String,
    redis: String,
}

impl Drop for Cluster {
    /// Stops the nodes, then removes what the cluster left in NATS (its JetStream stream) and
    /// Redis (its keys), so the shared services do not fill up run after run.
    fn drop(&mut self) {
        self.nodes.clear();
        let (name, nats, redis) = (self.name.clone(), self.nats.clone(), self.redis.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                if let Err(e) = parley_router_cluster::ClusterRouter::purge(&nats, &redis, &name).await {
                    eprintln!("cannot purge cluster {name}: {e}");
                }
            });
        })
        .join();
    }
}

impl Cluster {
    async fn start(n: usize, nats: &str, redis: &str, extra: &[&str]) -> Cluster {
        Cluster::start_env(n, nats, redis, extra, &[]).await
    }

    async fn start_env(n: usize, nats: &str, redis: &str, extra: &[&str], env: &[(&str, String)]) -> Cluster {
        let db = TestDatabase::create().await;
        let cluster = format!("it{:08x}", rand_u32());
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let node_id = format!("node{i}");
            let mut flags = vec![
                "--store",
                &db.url,
                "--nats",
                nats,
                "--redis",
                redis,
                "--cluster",
                &cluster,
                "--node-id",
                &node_id,
                "--admin-token",
                ADMIN_TOKEN,
                "--send-rate-per-sec",
                "100000",
                "--send-burst",
                "100000",
            ];
            flags.extend_from_slice(extra);
            nodes.push(TestServer::start_with_env(&flags, env).await);
        }
        Cluster { nodes, _db: db, name: cluster, nats: nats.into(), redis: redis.into() }
    }

    /// On the machine's shared NATS and Redis.
    async fn shared(n: usize, extra: &[&str]) -> Cluster {
        let nats = env_or("PARLEY_TEST_NATS", "nats://127.0.0.1:4222");
        let redis = env_or("PARLEY_TEST_REDIS", "redis://127.0.0.1:6379");
        Cluster::start(n, &nats, &redis, extra).await
    }

    /// On the machine's shared NATS and Redis, with extra environment variables.
    async fn shared_env(n: usize, extra: &[&str], env: &[(&str, String)]) -> Cluster {
        let nats = env_or("PARLEY_TEST_NATS", "nats://127.0.0.1:4222");
        let redis = env_or("PARLEY_TEST_REDIS", "redis://127.0.0.1:6379");
        Cluster::start_env(n, &nats, &redis, extra, env).await
    }

    fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.api().base.clone()).collect()
    }
}

/// The same device, talking to another node.
fn on(d: &Device, node: &TestServer) -> Device {
    let mut d = d.clone();
    d.user.api = node.api().clone();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_chat_receipts_and_multi_device_work_across_nodes() {
    let c = Cluster::shared(3, &[]).await;
    let alice = c.nodes[0].api().user().await;
    let (a1, a2) = (alice.login_as("phone").await, alice.login_as("laptop").await);
    let b = c.nodes[1].api().user().await.login().await;
    let conv = a1.direct(b.user_id()).await;
    // Alice's phone on node 0, her laptop on node 2, Bob on node 1.
    let a1ws = a1.connect_synced().await;
    let a2ws = on(&a2, &c.nodes[2]).connect_synced().await;
    let bws = on(&b, &c.nodes[1]).connect_synced().await;

    a1ws.send_json(&json!({"type": "send", "ref": "s1", "conversation_id": conv, "client_id": "c1",
        "kind": "text", "body": {"text": "hello from node 0"}}))
        .await;
    let sent = a1ws.wait_for(|f| f["type"] == "sent", T).await;
    let seq = i(&sent, "seq");
    let got = bws.wait_for(|f| f["type"] == "message" && f["kind"] == "text", T).await;
    assert_eq!(got["body"]["text"], "hello from node 0");
    assert_eq!(i(&got, "seq"), seq);
    // The sender's other device, on a third node, gets its own message too.
    let mine = a2ws.wait_for(|f| f["type"] == "message" && f["kind"] == "text", T).await;
    assert_eq!(i(&mine, "seq"), seq);

    // Bob acknowledges and reads on node 1: Alice's devices on nodes 0 and 2 see the receipts.
    bws.send_json(&json!({"type": "ack", "conversation_id": conv, "seq": seq})).await;
    bws.send_json(&json!({"type": "read", "conversation_id": conv, "seq": seq})).await;
    for ws in [&a1ws, &a2ws] {
        ws.wait_for(|f| f["type"] == "receipt" && f["user_id"] == b.user_id() && i(f, "read_seq") == seq, T).await;
    }

    // A reply over REST on node 2 reaches Alice's sockets on nodes 0 and 2 live.
    let (status, _) = on(&b, &c.nodes[2]).post_text(&conv, "r1", "hi back").await;
    assert_eq!(status, 201);
    for ws in [&a1ws, &a2ws] {
        ws.wait_for(|f| f["type"] == "message" && f["body"]["text"] == "hi back", T).await;
    }
    // Nothing arrived twice on any socket.
    for ws in [&a1ws, &a2ws, &bws] {
        let mut seen = HashMap::new();
        for f in ws.frames().into_iter().filter(|f| f["type"] == "message") {
            *seen.entry(i(&f, "seq")).or_insert(0) += 1;
        }
        assert!(seen.values().all(|&n| n == 1), "a repeat on one socket: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_typing_cross_nodes() {
    let c = Cluster::shared(2, &["--presence-grace-ms", "300"]).await;
    let a = c.nodes[0].api().user().await.login().await;
    let b = c.nodes[1].api().user().await.login().await;
    let conv = a.direct(b.user_id()).await;
    let aws = a.connect_synced().await;
    aws.send_json(&json!({"type": "presence_subscribe", "user_ids": [b.user_id()]})).await;
    aws.wait_for(|f| f["type"] == "presence" && f["user_id"] == b.user_id() && f["online"] == false, T).await;

    // Bob comes online on the other node.
    let bws = on(&b, &c.nodes[1]).connect_synced().await;
    aws.wait_for(|f| f["type"] == "presence" && f["user_id"] == b.user_id() && f["online"] == true, T).await;

    // Typing crosses nodes, and sending ends it.
    bws.send_json(&json!({"type": "typing", "conversation_id": conv, "active": true})).await;
    aws.wait_for(|f| f["type"] == "typing" && f["user_id"] == b.user_id() && f["active"] == true, T).await;
    bws.send_json(&json!({"type": "send", "conversation_id": conv, "client_id": "t1", "kind": "text",
        "body": {"text": "done typing"}}))
        .await;
    aws.wait_for(|f| f["type"] == "typing" && f["user_id"] == b.user_id() && f["active"] == false, T).await;

    // Bob leaves: after the grace period Alice sees him offline with a last_seen.
    let from = aws.len();
    bws.close().await;
    let went = |f: &serde_json::Value| f["type"] == "presence" && f["user_id"] == b.user_id() && f["online"] == false;
    let off = aws.wait_for_from(from, went, T).await;
    assert!(off["last_seen"].is_i64(), "last_seen after going offline: {off}");
    // The REST view on either node agrees.
    for node in &c.nodes {
        let r = on(&a, node).get(&format!("/v1/presence?user_ids={}", b.user_id())).await.expect(200);
        assert_eq!(r["presence"][0]["online"], false, "node {}: {r}", node.port);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1024_member_group_delivers_to_members_spread_over_three_nodes() {
    let c = Cluster::shared(3, &[]).await;
    let members = c.nodes[0].api().bulk_logins(ADMIN_TOKEN, 1024).await;
    let ids: Vec<&str> = members[1..].iter().map(|d| d.user_id()).collect();
    let conv = members[0].group("everyone", &ids).await;
    // Member k connects to node k % 3.
    let mut sockets = Vec::with_capacity(members.len());
    for (k, m) in members.iter().enumerate() {
        sockets.push(on(m, &c.nodes[k % 3]).connect_lean().await);
    }
    for n in 0..3 {
        let sender = &sockets[n * 100];
        sender
            .send_json(&json!({"type": "send", "ref": format!("g{n}"), "conversation_id": conv,
                "client_id": format!("g{n}"), "kind": "text", "body": {"text": format!("to all {n}")}}))
            .await;
    }
    for (k, ws) in sockets.iter().enumerate() {
        let own = [0, 100, 200].iter().filter(|&&s| s == k).count();
        let want = 3 - own;
        ws.try_wait_count(|f| f["type"] == "message" && f["kind"] == "text", want, LONG)
            .await
            .unwrap_or_else(|n| panic!("member {k} (node {}) got {n} of {want}", k % 3));
    }
    // Exactly once each, in seq order, on every socket.
    for ws in &sockets {
        let seqs: Vec<i64> =
            ws.frames().iter().filter(|f| f["type"] == "message" && f["kind"] == "text").map(|f| i(f, "seq")).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "out of order or repeated: {seqs:?}");
    }
}

/// What every receiving device saw, per conversation: seq → count.
type Seen = BTreeMap<String, BTreeMap<i64, u32>>;

/// What a receiving device has seen so far, and a signal on every new message.
#[derive(Clone, Default)]
struct Recorded {
    seen: std::sync::Arc<std::sync::Mutex<Seen>>,
    changed: std::sync::Arc<tokio::sync::Notify>,
}

/// A device on the SDK that reconnects to any node and records every log entry it gets (text and
/// the conversation's own entries, so gaps can be checked).
async fn recorder(urls: &[String], token: &str) -> (Connection, Recorded) {
    let opts = ConnectOptions {
        other_servers: urls[1..].to_vec(),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..ConnectOptions::default()
    };
    let (conn, mut events): (Connection, mpsc::Receiver<Event>) =
        Connection::connect(&urls[0], token, opts).await.expect("connect");
    let rec = Recorded::default();
    let r = rec.clone();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let Event::Message(m) = e {
                let mut seen = r.seen.lock().unwrap();
                *seen.entry(m.conversation_id.to_string()).or_default().entry(m.seq).or_default() += 1;
                r.changed.notify_waiters();
            }
        }
    });
    (conn, rec)
}

/// Senders on every node send `per_sender` messages each into their direct conversation with a
/// receiver, while `fault` runs; returns the conversations with the seqs acknowledged (`sent`).
/// How many sends have been acknowledged so far, for faults that strike at a point of the load
/// rather than at a time (a slow machine then still injects them mid-load).
#[derive(Clone, Default)]
struct Progress {
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    changed: std::sync::Arc<tokio::sync::Notify>,
}

impl Progress {
    fn add(&self) {
        self.acked.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn now(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    /// Until at least `n` sends are acknowledged (bounded: a stalled load fails the test).
    async fn reached(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + LONG;
        while self.now() < n {
            let notified = self.changed.notified();
            assert!(tokio::time::Instant::now() < deadline, "the load stalled at {} of {n} sends", self.now());
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }
}

async fn send_under_fault<F: Future<Output = ()>>(
    urls: &[String],
    pairs: &[(Device, Device, String)],
    per_sender: usize,
    progress: &Progress,
    fault: F,
) -> HashMap<String, Vec<i64>> {
    let mut senders = Vec::new();
    for (k, (s, _, conv)) in pairs.iter().enumerate() {
        let mut rotated = urls.to_vec();
        rotated.rotate_left(k % urls.len());
        let opts = ConnectOptions {
            other_servers: rotated[1..].to_vec(),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            ..ConnectOptions::default()
        };
        let (conn, mut events) = Connection::connect(&rotated[0], &s.token, opts).await.expect("sender connects");
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        let (conv, progress) = (conv.clone(), progress.clone());
        senders.push(tokio::spawn(async move {
            let id = Id::parse(&conv);
            let mut acked = Vec::new();
            // A steady load: one send per sender every 5 ms at most.
            let mut pace = tokio::time::interval(Duration::from_millis(5));
            for n in 0..per_sender {
                // The SDK retries a send across reconnects with the same client_id; one refused
                // (`unavailable` while a dependency is down) was never acknowledged and is not
                // counted: the sender tries again, for up to 10 s, as an app would.
                for _ in 0..2000 {
                    pace.tick().await;
                    if let Ok(sent) = conn.send_text(id, &format!("m{n}")).await {
                        acked.push(sent.seq);
                        progress.add();
                        break;
                    }
                }
            }
            (conv, acked)
        }));
    }
    fault.await;
    let mut out = HashMap::new();
    for s in senders {
        let (conv, acked) = s.await.expect("sender task");
        out.insert(conv, acked);
    }
    out
}

/// Every acknowledged seq reached the receiver (at least once, as guarantee 3 allows after a
/// reconnect), with no gaps; and no socket wrote the same seq twice without a reconnect between.
fn assert_all_delivered(acked: &HashMap<String, Vec<i64>>, seen: &[Seen]) {
    for (conv, seqs) in acked {
        assert!(!seqs.is_empty(), "no send into {conv} was acknowledged");
        let got = seen.iter().find_map(|s| s.get(conv)).cloned().unwrap_or_default();
        let missing: Vec<&i64> = seqs.iter().filter(|s| !got.contains_key(s)).collect();
        assert!(missing.is_empty(), "{conv}: acknowledged but never delivered: {missing:?}");
        let max = *got.keys().max().unwrap_or(&0);
        let gaps: Vec<i64> = (1..=max).filter(|s| !got.contains_key(s)).collect();
        assert!(gaps.is_empty(), "{conv}: gaps in what the receiver saw: {gaps:?}");
    }
}

/// Pairs of (sender, receiver, conversation), `n` of them, on `node` for setup.
async fn pairs(node: &TestServer, n: usize) -> Vec<(Device, Device, String)> {
    let devices = node.api().bulk_logins(ADMIN_TOKEN, 2 * n).await;
    let mut out = Vec::with_capacity(n);
    for p in devices.chunks(2) {
        let conv = p[0].direct(p[1].user_id()).await;
        out.push((p[0].clone(), p[1].clone(), conv));
    }
    out
}

async fn receivers(urls: &[String], pairs: &[(Device, Device, String)]) -> Vec<(Connection, Recorded)> {
    let mut out = Vec::new();
    for (k, (_, r, _)) in pairs.iter().enumerate() {
        let mut rotated = urls.to_vec();
        rotated.rotate_left((k + 1) % urls.len());
        out.push(recorder(&rotated, &r.token).await);
    }
    out
}

/// Waits (bounded) until the receivers have seen every acknowledged seq — live, or on the resync
/// after their node went away — then closes them and returns what they saw.
async fn collect(rx: Vec<(Connection, Recorded)>, acked: &HashMap<String, Vec<i64>>) -> Vec<Seen> {
    let complete = |rx: &[(Connection, Recorded)]| {
        acked.iter().all(|(conv, seqs)| {
            rx.iter().any(|(_, r)| {
                let seen = r.seen.lock().unwrap();
                seen.get(conv).is_some_and(|got| seqs.iter().all(|s| got.contains_key(s)))
            })
        })
    };
    let deadline = tokio::time::Instant::now() + LONG;
    while !complete(&rx) && tokio::time::Instant::now() < deadline {
        let waits = rx.iter().map(|(_, r)| {
            let changed = r.changed.clone();
            Box::pin(async move { changed.notified().await })
        });
        let _ = tokio::time::timeout(Duration::from_millis(200), futures_util::future::select_all(waits)).await;
    }
    let mut out = Vec::new();
    for (conn, r) in rx {
        let _ = conn.close().await;
        out.push(r.seen.lock().unwrap().clone());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node_under_load_loses_no_acknowledged_message() {
    let mut c = Cluster::shared(3, &["--presence-grace-ms", "200"]).await;
    let urls = c.urls();
    let pairs = pairs(&c.nodes[0], 12).await;
    let rx = receivers(&urls, &pairs).await;
    let victim = &mut c.nodes[1];
    let progress = Progress::default();
    let total = pairs.len() * 120;
    let fault = async {
        progress.reached(total / 4).await;
        victim.kill9().await;
    };
    let acked = send_under_fault(&urls, &pairs, 120, &progress, fault).await;
    let seen = collect(rx, &acked).await;
    assert_all_delivered(&acked, &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_every_node_under_load_loses_nothing() {
    let mut c = Cluster::shared(3, &["--presence-grace-ms", "200"]).await;
    let urls = c.urls();
    let pairs = pairs(&c.nodes[0], 9).await;
    let rx = receivers(&urls, &pairs).await;
    let nodes = &mut c.nodes;
    let progress = Progress::default();
    let total = pairs.len() * 200;
    let fault = async {
        for (k, node) in nodes.iter_mut().enumerate() {
            progress.reached((k + 1) * total / 5).await;
            // SIGTERM: drain (close 1001, finish writes), then start again on the same port.
            node.restart().await;
        }
    };
    let acked = send_under_fault(&urls, &pairs, 200, &progress, fault).await;
    let seen = collect(rx, &acked).await;
    assert_all_delivered(&acked, &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_and_redis_restarts_under_load_lose_nothing_and_nodes_recover() {
    let mut nats = Service::nats().await;
    let mut redis = Service::redis().await;
    let c = Cluster::start(2, &nats.url(), &redis.url(), &["--presence-grace-ms", "200"]).await;
    let urls = c.urls();
    let pairs = pairs(&c.nodes[0], 8).await;
    let rx = receivers(&urls, &pairs).await;
    let progress = Progress::default();
    let total = pairs.len() * 200;
    let fault = async {
        progress.reached(total / 5).await;
        // Each outage lasts half a second, under load.
        nats.restart(Duration::from_millis(500)).await;
        progress.reached(progress.now() + total / 5).await;
        redis.restart(Duration::from_millis(500)).await;
    };
    let acked = send_under_fault(&urls, &pairs, 200, &progress, fault).await;
    let seen = collect(rx, &acked).await;
    assert_all_delivered(&acked, &seen);

    // Recovered without a restart: a fresh message crosses nodes live.
    let (a, b, conv) = &pairs[0];
    let bws = on(b, &c.nodes[1]).connect_synced().await;
    let (status, sent) = on(a, &c.nodes[0]).post_text(conv, "after-outage", "live again").await;
    assert_eq!(status, 201);
    bws.wait_for(|f| f["type"] == "message" && i(f, "seq") == i(&sent, "seq"), T).await;
    for node in &c.nodes {
        let r = node.get("/readyz", None).await;
        assert_eq!(r.status, 200, "node {} not ready after the outage: {}", node.port, r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_a_missing_dependency() {
    let mut redis = Service::redis().await;
    let nats = Service::nats().await;
    let c = Cluster::start(1, &nats.url(), &redis.url(), &[]).await;
    // Ready once its first probes have answered.
    let deadline = tokio::time::Instant::now() + T;
    while c.nodes[0].get("/readyz", None).await.status != 200 {
        assert!(tokio::time::Instant::now() < deadline, "the node never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(mut child) = redis.child.take() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let r = c.nodes[0].get("/readyz", None).await;
        if r.status == 503 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still ready with Redis down: {}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The probes run every 2 s: wait for one that saw Redis down.
    let metrics = loop {
        let url = c.nodes[0].api().url("/metrics");
        let text = c.nodes[0].api().http.get(url).send().await.unwrap().text().await.unwrap();
        if text.contains("parley_dependency_up{dependency=\"redis\"} 0") {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline + T, "no probe saw Redis down:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for dep in ["store", "nats", "redis"] {
        assert!(
            metrics.contains(&format!("parley_dependency_round_trip_seconds{{dependency=\"{dep}\"}}")),
            "{dep}:\n{metrics}"
        );
    }
    assert!(metrics.contains("parley_dependency_up{dependency=\"redis\"} 0"), "{metrics}");
}

/// Pushes from a cluster: every node runs a push worker over the one queue in PostgreSQL, so
/// each push goes out once whichever node committed the message; a push a node was sending when
/// it died is sent by another node once its lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_go_out_once_from_a_cluster_and_a_dead_node_loses_none() {
    use crate::push::{Fakes, records_for};
    let fakes = Fakes::start().await;
    let mut flags = fakes.flags();
    flags.extend(["--push-coalesce-ms", "0", "--push-lease-ms", "3000"].map(String::from));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut c = Cluster::shared(3, &flags).await;

    // Eight offline devices in five groups; each group gets one message, committed on every node
    // in turn: 40 pushes, each to go out exactly once.
    let sender = c.nodes[0].api().user().await.login().await;
    let mut subs = Vec::new();
    let mut members = Vec::new();
    for k in 0..8 {
        let d = on(&c.nodes[k % 3].api().user().await.login().await, &c.nodes[k % 3]);
        let (sub, body) = fakes.subscribe().await;
        d.api().put("/v1/devices/current/push", &body, Some(&d.token)).await.expect(200);
        subs.push(sub);
        members.push(d.user_id().to_owned());
    }
    let ids: Vec<&str> = members.iter().map(String::as_str).collect();
    let mut sent = Vec::new();
    for g in 0..5 {
        let conv = sender.group(&format!("g{g}"), &ids).await;
        let (status, m) = on(&sender, &c.nodes[g % 3]).post_text(&conv, &format!("c{g}"), "hello").await;
        assert_eq!(status, 201);
        sent.push((conv, m["seq"].clone()));
    }
    let log = fakes.log(40, LONG).await;
    assert_eq!(log.len(), 40, "{log:?}");
    // A repeat would come at once or after a lease: none within three seconds more.
    let log = fakes.log(41, Duration::from_secs(3)).await;
    let mut seen = HashMap::new();
    for r in &log {
        *seen
            .entry((r["target"].as_str().unwrap().to_owned(), r["payload"]["conversation_id"].to_string()))
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 40, "every device got every group's push: {seen:?}");
    assert!(seen.values().all(|&n| n == 1), "each exactly once: {seen:?}");
    for sub in &subs {
        for (conv, seq) in &sent {
            let r =
                records_for(&log, sub).into_iter().find(|r| r["payload"]["conversation_id"] == conv.as_str()).unwrap();
            assert_eq!(&r["payload"]["seq"], seq);
        }
    }

    // Node 2 is down; node 0 claims the next push and dies while the push service holds it.
    c.nodes[2].stop().await;
    c.nodes[1].stop().await;
    fakes.script(&subs[0], json!([{"status": 201, "delay_ms": 6000}])).await;
    let conv = &sent[0].0;
    let (status, m) = sender.post_text(conv, "held", "while a node dies").await;
    assert_eq!(status, 201);
    fakes.delayed(1).await;
    c.nodes[1].restart().await;
    c.nodes[0].kill9().await;
    let killed_at = parley_core::now_ms();
    // Node 1 takes the push over when node 0's lease ends (the other seven went out before).
    let log = fakes.log(40 + 7 + 1, LONG).await;
    let again = records_for(&log, &subs[0])
        .into_iter()
        .any(|r| r["payload"]["seq"] == m["seq"] && r["received_at_ms"].as_i64() > Some(killed_at));
    assert!(again, "the held push was sent again by the surviving node: {log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_in_a_shared_s3_store_reach_members_through_any_node() {
    use crate::media::{ask, bytes_of, download, put, send_media, upload};
    use parley_router::conformance::eventually;
    let s3 = crate::s3::start_s3().await;
    let url = s3.url();
    let c = Cluster::shared_env(
        2,
        &["--media-store", &url, "--media-orphan-after-ms", "3000", "--media-gc-interval-ms", "100"],
        &s3.env(),
    )
    .await;
    // The web client may reach the object store: its origin is in the page's policy.
    let page = c.nodes[0].api().http.get(c.nodes[0].api().url("/")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    for directive in ["connect-src 'self' ", "img-src 'self' data: blob: ", "media-src 'self' blob: "] {
        assert!(csp.contains(&format!("{directive}{}", s3.endpoint)), "{directive} lacks the store: {csp}");
    }
    let alice = c.nodes[0].api().user().await.login().await;
    let bob = on(&c.nodes[0].api().user().await.login().await, &c.nodes[1]);
    let conv = alice.direct(bob.user_id()).await;
    let bytes = bytes_of(700_000, 21);
    // The URL is the object store's, with exactly the headers it signed.
    let created = ask(&alice, &bytes, "image/jpeg").await.expect(201);
    let target = &created["upload"];
    assert!(target["url"].as_str().unwrap().starts_with(&s3.endpoint), "{target}");
    let mut names: Vec<&String> = target["headers"].as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["content-length", "content-type", "x-amz-checksum-sha256"]);
    // Wrong bytes are refused by the store itself.
    let mut wrong = bytes.clone();
    wrong[0] ^= 1;
    assert!(put(alice.api(), target, wrong).await.status >= 400);
    assert_eq!(put(alice.api(), target, bytes.clone()).await.status, 200);
    // Completed through the other node.
    let id = s(&created, "media_id");
    on(&alice, &c.nodes[1]).post(&format!("/v1/media/{id}/complete"), &json!({})).await.expect(200);
    send_media(&alice, &conv, &id, &bytes, "image/jpeg").await.expect(201);
    assert_eq!(download(&bob, &id).await, bytes);
    // A range from the object store.
    let got = bob.get(&format!("/v1/media/{id}")).await.expect(200);
    let part = bob
        .api()
        .http
        .get(got["download"]["url"].as_str().unwrap())
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &bytes[10..20]);
    // What a browser could run is served as a download, not a page on the bucket's origin.
    let doc = bytes_of(3000, 23);
    let pdf = upload(&alice, &doc, "application/pdf").await;
    send_media(&alice, &conv, &pdf, &doc, "application/pdf").await.expect(201);
    let got = bob.get(&format!("/v1/media/{pdf}")).await.expect(200);
    let res = bob.api().http.get(got["download"]["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let disposition = res.headers().get("content-disposition").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(disposition.as_deref(), Some("attachment"));
    assert_eq!(res.bytes().await.unwrap().as_ref(), &doc[..]);
    // An orphan is removed from the bucket by the collector.
    let orphan = upload(&alice, &bytes_of(1000, 22), "image/png").await;
    let object = s3.bucket_dir().join("media").join(&orphan);
    eventually("the orphan leaves the bucket", || async { !object.exists() }).await;
    alice.get(&format!("/v1/media/{orphan}")).await.expect_error(404, "not_found");
    assert_eq!(download(&bob, &id).await, bytes, "the referenced one stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refuses_to_start_without_its_bucket() {
    let s3 = crate::s3::start_s3().await;
    let dir = tempfile::tempdir().unwrap();
    let bad = format!("s3://no-such-bucket?endpoint={}&region=us-east-1", s3.endpoint);
    let out = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["serve", "--listen", "127.0.0.1:0", "--media-store", &bad, "--data-dir"])
        .arg(dir.path())
        .envs(s3.env())
        .env_remove("PARLEY_MEDIA_STORE")
        .output()
        .await
        .expect("run parley serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-bucket"), "the error names the bucket: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_refusals_windows_and_collection_in_a_cluster() {
    use crate::media::{ask, bytes_of, download, put, send_media, upload};
    use parley_router::conformance::eventually;
    let s3 = crate::s3::start_s3().await;
    let url = s3.url();
    let flags = [
        "--media-store",
        &url,
        "--media-max-bytes",
        "2000000",
        "--media-url-ttl-ms",
        "2000",
        "--media-gc-interval-ms",
        "100",
    ];
    let c = Cluster::shared_env(2, &flags, &s3.env()).await;
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    let alice = n0.api().user().await.login().await;
    let bob = on(&n0.api().user().await.login().await, n1);
    let carol = n0.api().user().await.login().await;
    let dave = on(&n0.api().user().await.login().await, n1);
    let eve = n0.api().user().await.login().await;

    let r = ask(&alice, &bytes_of(2_000_001, 30), "video/mp4").await;
    r.expect_error(413, "payload_too_large");
    assert_eq!(r.body["error"]["max_bytes"], 2_000_000);

    // Bytes of another digest are refused by the store; an object that is not the declared one
    // when the upload is completed (here: written into the bucket behind S3's back) is
    // discarded.
    let bytes = bytes_of(50_000, 31);
    let created = ask(&alice, &bytes, "image/png").await.expect(201);
    let id = s(&created, "media_id");
    let mut wrong = bytes.clone();
    wrong[9] ^= 1;
    assert!(put(alice.api(), &created["upload"], wrong.clone()).await.status >= 400);
    std::fs::create_dir_all(s3.bucket_dir().join("media")).unwrap();
    std::fs::write(s3.bucket_dir().join("media").join(&id), &wrong).unwrap();
    let done = alice.post(&format!("/v1/media/{id}/complete"), &json!({})).await;
    assert_eq!(done.status, 400, "{}", done.body);
    alice.get(&format!("/v1/media/{id}")).await.expect_error(404, "not_found");

    // Altered and expired URLs: the object store refuses them.
    let created = ask(&alice, &bytes, "image/png").await.expect(201);
    let up = &created["upload"];
    let u = up["url"].as_str().unwrap();
    let mut altered = up.clone();
    altered["url"] = json!(format!("{}{}", &u[..u.len() - 1], if u.ends_with('0') { '1' } else { '0' }));
    assert_eq!(put(alice.api(), &altered, bytes.clone()).await.status, 403);
    // A body of the right length and another digest: 400 while the URL is valid, 403 once expired.
    let mut other = bytes.clone();
    other[1] ^= 1;
    eventually("the upload URL expires", || async { put(alice.api(), up, other.clone()).await.status == 403 }).await;
    assert_eq!(put(alice.api(), up, bytes.clone()).await.status, 403, "expired");

    // Windows: Bob leaves, Dave joins later, Eve is a stranger.
    let g = alice.group("cluster pics", &[bob.user_id(), carol.user_id()]).await;
    let m1 = upload(&alice, &bytes, "image/png").await;
    send_media(&alice, &g, &m1, &bytes, "image/png").await.expect(201);
    alice.delete(&format!("/v1/conversations/{g}/members/{}", bob.user_id())).await;
    let later = bytes_of(20_000, 32);
    let m2 = upload(&alice, &later, "image/png").await;
    let seq2 = i(&send_media(&alice, &g, &m2, &later, "image/png").await.expect(201)["message"], "seq");
    alice.post(&format!("/v1/conversations/{g}/members"), &json!({"user_ids": [dave.user_id()]})).await.expect(200);
    assert_eq!(download(&bob, &m1).await, bytes);
    bob.get(&format!("/v1/media/{m2}")).await.expect_error(404, "not_found");
    dave.get(&format!("/v1/media/{m1}")).await.expect_error(404, "not_found");
    dave.get(&format!("/v1/media/{m2}")).await.expect_error(404, "not_found");
    eve.get(&format!("/v1/media/{m1}")).await.expect_error(404, "not_found");
    assert_eq!(download(&on(&carol, n1), &m2).await, later);

    // Deleting the only message that shows m2 removes it from the bucket.
    alice
        .post(
            &format!("/v1/conversations/{g}/messages"),
            &json!({"client_id": unique("d"), "kind": "delete", "body": {"target_seq": seq2}}),
        )
        .await
        .expect(201);
    let object = s3.bucket_dir().join("media").join(&m2);
    eventually("the deleted message's media leaves the bucket", || async { !object.exists() }).await;
    carol.get(&format!("/v1/media/{m2}")).await.expect_error(404, "not_found");
    assert_eq!(download(&carol, &m1).await, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_exchange_works_across_nodes() {
    let c = Cluster::shared(2, &[]).await;
    let a = c.nodes[0].api().user().await.login().await;
    let b_user = c.nodes[1].api().user().await;
    let b = b_user.login().await;
    a.direct(b.user_id()).await;
    let aws = a.connect_synced().await;
    let bws = on(&b, &c.nodes[1]).connect_synced().await;
    // A device added through node 1 is announced to a member connected to node 0.
    let b2 = on(&b_user.login_as("second").await, &c.nodes[1]);
    aws.wait_for(|f| f["type"] == "device_list_changed" && f["user_id"] == b.user_id(), T).await;
    // Keys published through node 1, claimed through node 0.
    b2.api()
        .put(
            "/v1/keys",
            &json!({"identity": {"k": "b2"}, "one_time_keys": [{"key_id": "a", "key": 1}, {"key_id": "b", "key": 2}]}),
            Some(&b2.token),
        )
        .await
        .expect(200);
    let claim = json!({"devices": [{"user_id": b.user_id(), "device_id": b2.device_id}]});
    let a_on_1 = on(&a, &c.nodes[1]);
    let (x, y) = tokio::join!(a.post("/v1/keys/claim", &claim), a_on_1.post("/v1/keys/claim", &claim));
    let (x, y) = (x.expect(200), y.expect(200));
    assert_ne!(x["devices"][0]["one_time_key"]["key_id"], y["devices"][0]["one_time_key"]["key_id"]);
    // To-device payloads queued on node 0 reach a device connected to node 1, in order.
    for n in 0..5 {
        let frame = json!({"type": "to_device", "client_id": format!("x{n}"),
                           "messages": [{"user_id": b.user_id(), "device_id": b.device_id, "payload": {"n": n}}]});
        assert_eq!(aws.request(frame).await["type"], "to_device_sent");
    }
    let got = bws.wait_count(|f| f["type"] == "to_device", 5, T).await;
    let ns: Vec<i64> = got.iter().map(|f| f["payload"]["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, vec![0, 1, 2, 3, 4]);
}

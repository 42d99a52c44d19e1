//! End-to-end encryption against the real binary: the Rust SDK's E2EE layer (`parley-e2ee`,
//! vodozemac) and an independent client on libolm (`crates/parley/tests/olm_client.py`,
//! python-olm) read each other both ways; `stale_devices` makes a sender share its key with a
//! member's new device and retry with the same client id; a removed member cannot read what
//! is sent after; a new device reads what is sent after it joined; no plaintext reaches the
//! server's disk; and the CLI's `send --encrypted`, `watch` and `keys fingerprint`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parley_client::{Client, ConnectOptions, Connection, new_client_id};
use parley_e2ee::{Decrypted, E2ee, E2eeEvent, Store};
use parley_proto::{ErrorCode, Id};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(20);

fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pyenv.sh");
        let out = std::process::Command::new("bash").arg(script).output().expect("run scripts/pyenv.sh");
        assert!(out.status.success(), "pyenv.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().last().expect("the python path").trim().to_owned()
    })
}

fn quick() -> ConnectOptions {
    ConnectOptions {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(300),
        ..Default::default()
    }
}

/// A device with the Rust E2EE layer; its events are pumped through `E2ee::handle` into `rx`.
struct Peer {
    e2ee: Arc<E2ee>,
    rx: mpsc::UnboundedReceiver<E2eeEvent>,
    pump: Option<tokio::task::JoinHandle<()>>,
    events: Option<mpsc::Receiver<parley_client::Event>>,
    dir: Arc<tempfile::TempDir>,
    device: Device,
}

impl Peer {
    /// Opens the device's E2EE layer (publishing its keys) and starts pumping its events.
    async fn open(srv: &TestServer, device: &Device) -> Peer {
        let mut p = Self::open_paused(srv, device).await;
        p.start();
        p
    }

    /// Like [`Peer::open`], but events wait in the connection until [`Peer::start`].
    async fn open_paused(srv: &TestServer, device: &Device) -> Peer {
        let dir = tempfile::Builder::new().prefix("parley-e2ee-").tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("state.db"), &[7u8; 32]).expect("state file");
        let client = Client::new(&srv.api().base).with_token(&device.token);
        let (conn, events) = Connection::connect(&srv.api().base, &device.token, quick()).await.expect("connect");
        let e2ee = Arc::new(E2ee::open(client, conn, store).await.expect("open e2ee"));
        let (_tx, rx) = mpsc::unbounded_channel();
        Peer { e2ee, rx, pump: None, events: Some(events), dir: Arc::new(dir), device: device.clone() }
    }

    fn start(&mut self) {
        let Some(mut events) = self.events.take() else { return };
        let (tx, rx) = mpsc::unbounded_channel();
        self.rx = rx;
        let e2ee = self.e2ee.clone();
        self.pump = Some(tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match e2ee.handle(&ev).await {
                    Ok(out) => {
                        for e in out {
                            let _ = tx.send(e);
                        }
                    }
                    Err(e) => eprintln!("e2ee handle: {e}"),
                }
            }
        }));
    }

    fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The next decrypted message matching `pred`.
    async fn message(&mut self, mut pred: impl FnMut(&Decrypted) -> bool) -> Decrypted {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.rx.recv().await.expect("the pump stopped") {
                    E2eeEvent::Message(d) if pred(&d) => return *d,
                    _ => {}
                }
            }
        })
        .await
        .expect("timed out waiting for a decrypted message")
    }

    async fn text(&mut self, conv: Id, text: &str) -> Decrypted {
        self.message(|d| d.conversation_id == conv && d.body["text"] == text).await
    }

    /// Whether a message with this text arrives within `within`.
    async fn gets_text(&mut self, text: &str, within: Duration) -> bool {
        tokio::time::timeout(within, async {
            loop {
                match self.rx.recv().await {
                    Some(E2eeEvent::Message(d)) if d.body["text"] == text => return,
                    Some(_) => {}
                    None => std::future::pending::<()>().await,
                }
            }
        })
        .await
        .is_ok()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(p) = self.pump.take() {
            p.abort();
        }
    }
}

/// A new encrypted conversation: a direct one with `other`, or a group with `others`.
async fn encrypted_direct(a: &Device, other: &Device) -> Id {
    let r =
        a.post("/v1/conversations", &json!({"kind": "direct", "user_id": other.user_id(), "encrypted": true})).await;
    assert!(r.status == 200 || r.status == 201, "create: {} {}", r.status, r.body);
    assert_eq!(r.body["conversation"]["encrypted"], true, "{}", r.body);
    Id::parse(&s(&r.body["conversation"], "conversation_id"))
}

async fn encrypted_group(a: &Device, others: &[&Device]) -> Id {
    let ids: Vec<&str> = others.iter().map(|d| d.user_id()).collect();
    let r = a
        .post("/v1/conversations", &json!({"kind": "group", "title": "secret", "member_ids": ids, "encrypted": true}))
        .await;
    Id::parse(&s(&r.expect(201)["conversation"], "conversation_id"))
}

/// The independent client (python-olm) as a child process speaking JSON lines.
struct PyClient {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    ready: Value,
}

impl PyClient {
    async fn start(srv: &TestServer, device: &Device) -> PyClient {
        let py = tokio::task::spawn_blocking(python).await.expect("pyenv");
        let mut child = Command::new(py)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/olm_client.py"))
            .args(["--server", &srv.api().base, "--token", &device.token])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start olm_client.py");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut c = PyClient { _child: child, stdin, lines, ready: Value::Null };
        c.ready = c.next(|e| e["event"] == "ready").await;
        c
    }

    async fn cmd(&mut self, cmd: Value) {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await.expect("write to the python client");
        self.stdin.flush().await.expect("flush");
    }

    /// The next event matching `pred`; an `error` event fails the test.
    async fn next(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        tokio::time::timeout(WAIT, async {
            loop {
                let line = self.lines.next_line().await.expect("read").expect("the python client exited");
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
                assert_ne!(v["event"], "error", "python client: {v}");
                if pred(&v) {
                    return v;
                }
            }
        })
        .await
        .expect("timed out waiting for the python client")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libolm_and_vodozemac_read_each_other_both_ways() {
    let srv = TestServer::start().await;
    let (a, b) = (srv.login().await, srv.login().await);
    let mut rust = Peer::open(&srv, &a).await;
    let conv = encrypted_direct(&a, &b).await;
    let mut py = PyClient::start(&srv, &b).await;
    assert_eq!(py.ready["user_id"], b.user_id());

    // Rust → Python: a pre-key Olm message carries the Megolm key, then Megolm.
    for text in ["hello from vodozemac", "and again"] {
        rust.e2ee.send_text(conv, text).await.expect("rust send");
        let m = py.next(|e| e["event"] == "message").await;
        assert_eq!((m["kind"].as_str(), m["body"]["text"].as_str()), (Some("text"), Some(text)), "{m}");
        assert_eq!(m["sender_id"], a.user_id());
    }

    // Python → Rust, twice (the second on an established Olm session and the same Megolm one).
    for text in ["hello from libolm", "libolm again"] {
        py.cmd(
            json!({"cmd": "send", "conversation_id": conv, "kind": "text", "body": {"text": text, "reply_to_seq": 2}}),
        )
        .await;
        py.next(|e| e["event"] == "sent").await;
        let d = rust.text(conv, text).await;
        assert_eq!(d.sender_id.to_string(), b.user_id());
        assert_eq!(d.body["reply_to_seq"], 2);
    }

    // Rust → Python over the Olm session Python opened: edits and reactions travel inside.
    rust.e2ee.send(conv, "reaction", json!({"target_seq": 3, "emoji": "🎉"})).await.unwrap();
    let m = py.next(|e| e["event"] == "message").await;
    assert_eq!((m["kind"].as_str(), m["body"]["emoji"].as_str()), (Some("reaction"), Some("🎉")));

    // An encrypted attachment, decrypted by Python with its own AES-CTR after the digest check.
    let photo: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 256) as u8).collect();
    rust.e2ee.send_media(conv, photo.clone(), "image/png", Some("a caption"), Some("p.png")).await.unwrap();
    let m = py.next(|e| e["event"] == "message" && e["kind"] == "media").await;
    assert_eq!(m["body"]["caption"], "a caption");
    py.cmd(json!({"cmd": "download", "media_id": m["body"]["media_id"], "file": m["file"]})).await;
    let got = py.next(|e| e["event"] == "downloaded").await;
    use base64::Engine;
    let plain = base64::engine::general_purpose::STANDARD.decode(got["plaintext_b64"].as_str().unwrap()).unwrap();
    assert!(plain == photo, "python decrypted another attachment");

    // The server stored ciphertext only.
    let history = a.history(&conv.to_string()).await;
    for m in history.iter().filter(|m| m["kind"] == "encrypted") {
        let body = m["body"].to_string();
        assert!(!body.contains("vodozemac") && !body.contains("libolm") && !body.contains("caption"), "{body}");
        assert_eq!(m["body"]["algorithm"], "megolm.v1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_devices_shares_with_a_new_device_and_retries_with_the_same_client_id() {
    let srv = TestServer::start().await;
    let (a, b1) = (srv.login().await, srv.login().await);
    // The sender's events are never handled: it learns of the new device only from the refusal.
    let sender = Peer::open_paused(&srv, &a).await;
    let mut first = Peer::open(&srv, &b1).await;
    let conv = encrypted_direct(&a, &b1).await;
    sender.e2ee.send_text(conv, "one").await.unwrap();
    first.text(conv, "one").await;
    let old_epoch = a.conversation(&conv.to_string()).await["device_epoch"].as_i64().unwrap();

    // Bob signs in on a second device, which publishes its identity: the epoch moves.
    let b2 = b1.user.login().await;
    let mut second = Peer::open(&srv, &b2).await;
    let new_epoch = a.conversation(&conv.to_string()).await["device_epoch"].as_i64().unwrap();
    assert_ne!(old_epoch, new_epoch, "a new device with keys changes the epoch");

    // The protocol's refusal, as the SDK reports it.
    let stale_body = json!({"algorithm": "megolm.v1", "session_id": "x", "ciphertext": "x", "sender_key": "x", "device_epoch": old_epoch});
    let client = Client::new(&srv.api().base).with_token(&a.token);
    let e = client.post_message(conv, &new_client_id(), "encrypted", stale_body).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::StaleDevices), "{e}");
    assert_eq!(e.device_epoch(), Some(new_epoch));

    let client_id = new_client_id();
    let sent = sender.e2ee.send_with_client_id(conv, client_id.clone(), "text", json!({"text": "two"})).await.unwrap();
    assert_eq!(sender.e2ee.stale_retries(), 1, "the first try was stale");
    let d = second.text(conv, "two").await;
    assert_eq!(d.seq, sent.seq);
    first.text(conv, "two").await;
    // Stored once, under the caller's client id, encrypted for the new epoch.
    let history = a.history(&conv.to_string()).await;
    let stored: Vec<&Value> = history.iter().filter(|m| m["client_id"] == client_id.as_str()).collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["body"]["device_epoch"], new_epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_cannot_read_what_is_sent_after() {
    let srv = TestServer::start().await;
    let (a, b, c) = (srv.login().await, srv.login().await, srv.login().await);
    let mut pa = Peer::open(&srv, &a).await;
    let mut pb = Peer::open(&srv, &b).await;
    let mut pc = Peer::open(&srv, &c).await;
    let conv = encrypted_group(&a, &[&b, &c]).await;
    pa.e2ee.send_text(conv, "before").await.unwrap();
    pb.text(conv, "before").await;
    pc.text(conv, "before").await;
    let before = a.history(&conv.to_string()).await.into_iter().rfind(|m| m["kind"] == "encrypted").unwrap();

    a.delete(&format!("/v1/conversations/{conv}/members/{}", c.user_id())).await.expect(204);
    let sent = pa.e2ee.send_text(conv, "after").await.unwrap();
    pb.text(conv, "after").await;
    let after = a.history(&conv.to_string()).await.into_iter().find(|m| m["seq"] == sent.seq).unwrap();
    assert_ne!(before["body"]["session_id"], after["body"]["session_id"], "the session rotated");

    // The ciphertext handed to Carol's device anyway: no key, and asking for it gets nothing.
    let m: parley_proto::Message = serde_json::from_value(after).unwrap();
    assert!(pc.e2ee.decrypt(&m).await.is_err());
    assert!(!pc.gets_text("after", Duration::from_secs(2)).await, "the removed member read it");
    assert!(pc.e2ee.decrypt(&m).await.is_err());
    // The remaining members carry on.
    pb.e2ee.send_text(conv, "still here").await.unwrap();
    pa.text(conv, "still here").await;
    drop(pa);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_reads_everything_sent_after_it_joined() {
    let srv = TestServer::start().await;
    let (a, b1) = (srv.login().await, srv.login().await);
    let mut pa = Peer::open(&srv, &a).await;
    let mut pb1 = Peer::open(&srv, &b1).await;
    let conv = encrypted_direct(&a, &b1).await;
    pa.e2ee.send_text(conv, "m1").await.unwrap();
    pb1.text(conv, "m1").await;

    // A new device of Bob, offline while Alice writes; it reads all of it when it connects.
    let b2 = b1.user.login().await;
    let pb2 = Peer::open_paused(&srv, &b2).await;
    let state = pb2.dir.clone();
    let _ = pb2.e2ee.connection().close().await;
    drop(pb2);
    for t in ["m2", "m3", "m4"] {
        pa.e2ee.send_text(conv, t).await.unwrap();
    }
    // Bob's first device writes too: his own other device must read that as well.
    pb1.e2ee.send_text(conv, "from b1").await.unwrap();
    pa.text(conv, "from b1").await;

    let mut pb2 = reopen(&srv, &b2, state).await;
    for t in ["m2", "m3", "m4", "from b1"] {
        pb2.text(conv, t).await;
    }
    pb2.e2ee.send_text(conv, "from b2").await.unwrap();
    pa.text(conv, "from b2").await;
    pb1.text(conv, "from b2").await;
}

/// Opens a device's E2EE layer again from the state it left in `dir`.
async fn reopen(srv: &TestServer, device: &Device, dir: Arc<tempfile::TempDir>) -> Peer {
    let store = Store::open(&dir.path().join("state.db"), &[7u8; 32]).expect("state file");
    let client = Client::new(&srv.api().base).with_token(&device.token);
    let (conn, events) = Connection::connect(&srv.api().base, &device.token, quick()).await.expect("connect");
    let e2ee = Arc::new(E2ee::open(client, conn, store).await.expect("reopen"));
    let (_tx, rx) = mpsc::unbounded_channel();
    let mut p = Peer { e2ee, rx, pump: None, events: Some(events), dir, device: device.clone() };
    p.start();
    p
}

/// Every file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn holding(dir: &Path, marker: &[u8]) -> Vec<PathBuf> {
    let mut all = Vec::new();
    files(dir, &mut all);
    all.into_iter()
        .filter(|f| std::fs::read(f).is_ok_and(|bytes| bytes.windows(marker.len()).any(|w| w == marker)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_reaches_the_servers_disk() {
    let mut srv = TestServer::start().await;
    let (a, b) = (srv.login().await, srv.login().await);
    let mut pa = Peer::open(&srv, &a).await;
    let mut pb = Peer::open(&srv, &b).await;
    let conv = encrypted_direct(&a, &b).await;
    let marker = unique("PLAINTEXT-MARKER-");
    for i in 0..5 {
        pa.e2ee.send_text(conv, &format!("{marker} a{i}")).await.unwrap();
        pb.text(conv, &format!("{marker} a{i}")).await;
        pb.e2ee.send_text(conv, &format!("{marker} b{i}")).await.unwrap();
        pa.text(conv, &format!("{marker} b{i}")).await;
    }
    pa.e2ee.send(conv, "edit", json!({"target_seq": 2, "text": format!("{marker} edited")})).await.unwrap();
    let file = format!("{marker} attachment bytes").repeat(100).into_bytes();
    pa.e2ee.send_media(conv, file.clone(), "text/plain", Some(&format!("{marker} caption")), None).await.unwrap();
    let d = pb.message(|d| d.kind == "media").await;
    let out = pb.state_dir().join("download.txt");
    pb.e2ee.download_media(d.media_ids[0], d.file.as_ref().unwrap(), &out).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == file, "the attachment round-trips");
    std::fs::remove_file(&out).unwrap();

    // While running (WAL, log and media files as they are) and after a clean stop.
    let found = holding(&srv.data_dir(), marker.as_bytes());
    assert!(found.is_empty(), "plaintext on the server's disk: {found:?}");
    srv.stop().await;
    let found = holding(&srv.data_dir(), marker.as_bytes());
    assert!(found.is_empty(), "plaintext on the server's disk: {found:?}");
    // Nor in the clients' sealed state files.
    for p in [&pa, &pb] {
        let found = holding(p.state_dir(), marker.as_bytes());
        assert!(found.is_empty(), "plaintext in {}'s state: {found:?}", p.device.device_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_and_watches_encrypted_and_prints_safety_numbers() {
    let srv = TestServer::start().await;
    let (alice, bob) = (srv.user().await, srv.user().await);
    let (adir, bdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cli = |dir: &Path, args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_parley"));
        c.env("PARLEY_CONFIG_DIR", dir).env("PARLEY_SERVER", &srv.api().base).args(args);
        c.stdin(Stdio::null()).kill_on_drop(true);
        c
    };
    for (dir, u) in [(adir.path(), &alice), (bdir.path(), &bob)] {
        let out = cli(dir, &["login", &u.username, "--password", PASSWORD]).output().await.unwrap();
        assert!(out.status.success(), "login: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Bob watches first (publishing his device's keys as it starts).
    let mut watch =
        cli(bdir.path(), &["watch", "--count", "1"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = BufReader::new(watch.stderr.take().unwrap()).lines();
    tokio::time::timeout(WAIT, async {
        while let Some(l) = err.next_line().await.unwrap() {
            if l.contains("up to date") {
                return;
            }
        }
        panic!("watch ended early");
    })
    .await
    .expect("watch started");
    let out = cli(adir.path(), &["send", &bob.username, "a secret for bob", "--encrypted"]).output().await.unwrap();
    assert!(out.status.success(), "send: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("end-to-end encrypted"));
    let watched = tokio::time::timeout(WAIT, watch.wait_with_output()).await.expect("watch ended").unwrap();
    let text = String::from_utf8_lossy(&watched.stdout);
    assert!(text.contains(&format!("{}: a secret for bob", alice.username)), "watch printed: {text}");
    // The key file is the owner's only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(adir.path().join("e2ee.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Both sides print the same safety number.
    let number = |dir: PathBuf, other: String| {
        let mut c = cli(&dir, &["keys", "fingerprint", &other]);
        async move {
            let out = c.output().await.unwrap();
            assert!(out.status.success(), "fingerprint: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }
    };
    let na = number(adir.path().to_path_buf(), bob.username.clone()).await;
    let nb = number(bdir.path().to_path_buf(), alice.username.clone()).await;
    assert_eq!(na, nb);
    assert_eq!(na.split(' ').count(), 6, "{na}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_keys_are_topped_up_when_the_server_says_they_run_low() {
    let srv = TestServer::start().await;
    let (a, b) = (srv.login().await, srv.login().await);
    let _pa = Peer::open(&srv, &a).await;
    let count =
        |d: Device| async move { d.get("/v1/keys/count").await.expect(200)["one_time_key_count"].as_i64().unwrap() };
    assert_eq!(count(a.clone()).await, 50, "50 one-time keys at first");
    // Bob (who shares a conversation) claims Alice's keys one by one until `keys_low` comes.
    encrypted_direct(&a, &b).await;
    for _ in 0..45 {
        let r =
            b.post("/v1/keys/claim", &json!({"devices": [{"user_id": a.user_id(), "device_id": a.device_id}]})).await;
        assert!(!r.expect(200)["devices"][0]["fallback"].as_bool().unwrap());
    }
    // Alice's device hears `keys_low` and uploads more.
    parley_router::conformance::eventually("the device tops its one-time keys up", || async {
        count(a.clone()).await >= 25
    })
    .await;
    let n = count(a.clone()).await;
    assert!(n <= 100, "{n}");
}

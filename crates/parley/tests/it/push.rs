//! Push notifications end to end: the real binary pushes to local fakes of Web Push, APNs and
//! FCM (`crates/parley/tests/push_fakes.py`), which check every request with implementations of
//! the standards that owe nothing to ours (http_ece decrypts RFC 8291 bodies, PyJWT verifies the
//! VAPID, APNs and OAuth tokens). The tests wait on the fakes' long-polls (a push arrives, or a
//! request is being held) and on WebSocket frames; a push that must not come is waited for with
//! a timeout. Only a registration's invalidation, which no event announces, is polled (with a
//! deadline) through `GET /v1/push/status`.

use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use parley_router::conformance::eventually;

use crate::harness::*;

/// The Python of the fakes: `scripts/pyenv.sh` makes it once per test process.
fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pyenv.sh");
        let out = std::process::Command::new("bash").arg(script).output().expect("run scripts/pyenv.sh");
        assert!(out.status.success(), "pyenv.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().last().expect("the python path").trim().to_owned()
    })
}

/// The running fakes and the credentials they made.
pub(crate) struct Fakes {
    _child: Child,
    _dir: tempfile::TempDir,
    info: Value,
    http: reqwest::Client,
}

impl Fakes {
    pub(crate) async fn start() -> Fakes {
        let py = tokio::task::spawn_blocking(python).await.expect("pyenv");
        let dir = tempfile::Builder::new().prefix("parley-fakes-").tempdir().expect("temp dir");
        let mut child = Command::new(py)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/push_fakes.py"))
            .arg("--dir")
            .arg(dir.path())
            // The fakes exit when their stdin closes: they never outlive the test.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the push fakes");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line =
            tokio::time::timeout(LONG, lines.next_line()).await.expect("fakes started").expect("read").expect("a line");
        let info: Value = serde_json::from_str(&line).expect("the fakes' JSON line");
        Fakes { _child: child, _dir: dir, info, http: reqwest::Client::new() }
    }

    fn port(&self, name: &str) -> u64 {
        self.info[name].as_u64().expect("port")
    }

    fn control(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port("control"))
    }

    /// A browser-like subscription: `(id, PushSubscription JSON for PUT /v1/devices/current/push)`.
    pub(crate) async fn subscribe(&self) -> (String, Value) {
        let sub: Value =
            self.http.post(self.control("/subscribe")).json(&json!({})).send().await.unwrap().json().await.unwrap();
        let body = json!({"kind": "webpush", "endpoint": sub["endpoint"], "keys": sub["keys"]});
        (s(&sub, "id"), body)
    }

    pub(crate) async fn script(&self, target: &str, responses: Value) {
        let r = self
            .http
            .post(self.control("/script"))
            .json(&json!({"target": target, "responses": responses}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// Every record so far, once there are at least `n` (or after `timeout`).
    pub(crate) async fn log(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let url = self.control(&format!("/log?n={n}&timeout_ms={}", timeout.as_millis()));
        let v: Value = self.http.get(url).send().await.unwrap().json().await.unwrap();
        v["records"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `n` requests have begun a scripted delay (are being held).
    pub(crate) async fn delayed(&self, n: usize) {
        let url = self.control(&format!("/delayed?n={n}&timeout_ms={}", T.as_millis()));
        let v: Value = self.http.get(url).send().await.unwrap().json().await.unwrap();
        assert!(v["delayed"].as_u64() >= Some(n as u64), "no request was held: {v}");
    }

    async fn stats(&self) -> Value {
        self.http.get(self.control("/stats")).send().await.unwrap().json().await.unwrap()
    }

    /// Server flags that aim every provider at the fakes.
    pub(crate) fn flags(&self) -> Vec<String> {
        let i = &self.info;
        vec![
            "--push-allow-private-endpoints".into(),
            "--apns-key-file".into(),
            s(i, "apns_key"),
            "--apns-key-id".into(),
            s(i, "apns_key_id"),
            "--apns-team-id".into(),
            s(i, "apns_team_id"),
            "--apns-topic".into(),
            s(i, "apns_topic"),
            "--apns-url".into(),
            format!("https://127.0.0.1:{}", self.port("apns")),
            "--apns-ca-file".into(),
            s(i, "apns_ca"),
            "--fcm-service-account".into(),
            s(i, "fcm_service_account"),
            "--fcm-url".into(),
            format!("http://127.0.0.1:{}", self.port("fcm")),
        ]
    }
}

async fn server(fakes: &Fakes, extra: &[&str]) -> TestServer {
    let mut flags = fakes.flags();
    flags.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    TestServer::start_with(&refs).await
}

/// The value of one metric line (`name{labels}`), 0 when absent.
async fn metric(srv: &TestServer, line: &str) -> f64 {
    let text = srv.get("/metrics", None).await.body.as_str().unwrap_or("").to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(line).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Waits until a provider's "gone" has been recorded against `device`'s registration.
async fn invalidated(device: &Device) {
    eventually("the registration is invalidated", || async {
        device.get("/v1/push/status").await.body["push"]["invalidated_at"].is_i64()
    })
    .await;
}

pub(crate) fn records_for<'a>(log: &'a [Value], target: &str) -> Vec<&'a Value> {
    log.iter().filter(|r| r["target"] == target).collect()
}

/// Checks a record passed every one of the fake's checks, and that no marker leaked into it.
fn assert_clean(r: &Value, markers: &[&str]) {
    assert_eq!(r["ok"], true, "the fake found faults: {r}");
    let seen = format!("{} {} {} {}", r["headers"], r["payload"], r["raw_body"], r["jwt"]);
    for m in markers {
        assert!(!seen.to_lowercase().contains(&m.to_lowercase()), "{m} leaked into a push: {seen}");
    }
}

/// Users with names that must never reach a provider.
async fn pair(srv: &TestServer) -> (Device, Device) {
    let mk = |name: &'static str| async move {
        let u = unique(name);
        srv.post(
            "/v1/accounts",
            &json!({"username": u, "password": PASSWORD, "display_name": format!("Display {name} Zq")}),
            None,
        )
        .await
        .expect(201);
        let r = srv.post("/v1/sessions", &json!({"username": u, "password": PASSWORD}), None).await.expect(201);
        let user =
            User { api: srv.api().clone(), username: u.clone(), password: PASSWORD.into(), user_id: s(&r, "user_id") };
        Device { user, device_id: s(&r, "device_id"), token: s(&r, "token") }
    };
    (mk("alicepush").await, mk("bobpush").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_is_content_free_verified_independently_and_follows_the_rules() {
    let fakes = Fakes::start().await;
    let srv = server(&fakes, &["--push-coalesce-ms", "3000"]).await;
    let (alice, bob) = pair(&srv).await;
    let (sub, body) = fakes.subscribe().await;
    let reg = bob.api().put("/v1/devices/current/push", &body, Some(&bob.token)).await.expect(200);
    assert_eq!(reg["push"]["kind"], "webpush");
    let vapid = s(&bob.get("/v1/push/vapid").await.expect(200), "public_key");

    let dm = alice.direct(bob.user_id()).await;
    let group = alice.group("Secret Title Qx", &[bob.user_id()]).await;
    let markers = ["MARKER-text-7731", &alice.user.username, &bob.user.username, "Display", "Secret Title Qx"];

    // One message: one push, at once, that decrypts to exactly the contract's payload.
    let sent = alice.connect_synced().await.send_text(&dm, "MARKER-text-7731 hello").await;
    let log = fakes.log(1, T).await;
    let first = records_for(&log, &sub);
    assert_eq!(first.len(), 1, "{log:?}");
    let r = first[0];
    assert_clean(r, &markers);
    assert_eq!(
        r["payload"],
        json!({"v": 1, "type": "message", "conversation_id": dm, "seq": sent["seq"], "unread_count": 1})
    );
    assert_eq!(r["vapid_key"], vapid, "signed with the key browsers subscribe with");
    assert_eq!(r["headers"]["urgency"], "high");
    let dm_topic = r["headers"]["topic"].as_str().expect("a topic").to_owned();
    assert!(dm_topic.len() <= 32 && !dm_topic.contains(&dm) && !dm_topic.contains(&bob.device_id));

    // Coalescing: five more in the DM within the window and one in the group: the DM's merge
    // into one push at the window's end carrying the latest seq; the group's goes at once.
    let wa = alice.connect_synced().await;
    let mut last = Value::Null;
    for n in 0..5 {
        last = wa.send_text(&dm, &format!("MARKER-text-7731 {n}")).await;
    }
    let g = wa.send_text(&group, "MARKER-text-7731 group").await;
    let log = fakes.log(3, Duration::from_secs(10)).await;
    let mine = records_for(&log, &sub);
    assert_eq!(mine.len(), 3, "one DM push at first, one merged DM push, one group push: {log:?}");
    for r in &mine {
        assert_clean(r, &markers);
    }
    let group_push = mine.iter().find(|r| r["payload"]["conversation_id"] == group).expect("a group push");
    assert_eq!(group_push["payload"]["seq"], g["seq"]);
    assert_ne!(group_push["headers"]["topic"], dm_topic, "conversations have their own topics");
    let merged = mine.iter().rfind(|r| r["payload"]["conversation_id"] == dm).unwrap();
    assert_eq!(merged["payload"]["seq"], last["seq"], "the merged push carries the latest seq");
    assert_eq!(merged["payload"]["unread_count"], 6);
    assert_eq!(merged["headers"]["topic"], dm_topic, "one topic per (device, conversation)");

    // Own messages never push the sender's devices; a connected device is not pushed. (bob2, not
    // registered, stays connected to the end: its frames show how far fanout has got.)
    let bob2 = bob.user.login().await;
    let wb2 = bob2.connect_synced().await;
    wb2.send_text(&group, "from bob").await;
    // (A conversation of its own: in the others a merge window is open, which would hold the
    // push back until after bob left.)
    let fresh = alice.group("online check", &[bob.user_id()]).await;
    let wb = bob.connect_synced().await;
    let online = wa.send_text(&fresh, "while bob is online").await;
    wb.wait_for(|f| f["type"] == "message" && f["seq"] == online["seq"], T).await;
    assert_eq!(records_for(&fakes.log(4, Duration::from_millis(700)).await, &sub).len(), 3, "neither is pushed");
    // Acknowledged before leaving, so a decision still to come pushes nothing either.
    wb.send_json(&json!({"type": "ack", "conversation_id": fresh, "seq": online["seq"]})).await;
    wb.barrier().await;
    wb.close().await;

    // Muted, mentions only, do not disturb: decided in the commit, never sent.
    let until = parley_core::now_ms() + 3_600_000;
    let st = bob.patch(&format!("/v1/conversations/{dm}/settings"), &json!({"muted_until": until})).await.expect(200);
    assert_eq!(st["settings"], json!({"muted_until": until, "notify": "all"}));
    assert_eq!(bob.conversation(&dm).await["settings"]["muted_until"], until);
    bob.patch(&format!("/v1/conversations/{group}/settings"), &json!({"notify": "mentions"})).await.expect(200);
    wa.send_text(&dm, "muted").await;
    wa.send_text(&group, "no mention").await;
    let mention = wa
        .request(json!({"type": "send", "conversation_id": group, "client_id": unique("m"), "kind": "text",
            "body": {"text": "hey @bob", "mentions": [bob.user_id()]}}))
        .await;
    let log = fakes.log(4, T).await;
    let mine = records_for(&log, &sub);
    assert_eq!(mine.len(), 4, "only the mention pushes: {log:?}");
    assert_eq!(mine[3]["payload"]["seq"], mention["seq"]);
    bob.patch("/v1/me", &json!({"dnd_until": until})).await.expect(200);
    assert_eq!(bob.get("/v1/me").await.expect(200)["dnd_until"], until);
    wa.request(json!({"type": "send", "conversation_id": group, "client_id": unique("m"), "kind": "text",
        "body": {"text": "hey again", "mentions": [bob.user_id()]}}))
        .await;
    bob.patch("/v1/me", &json!({"dnd_until": null})).await.expect(200);
    bob.patch(&format!("/v1/conversations/{dm}/settings"), &json!({"muted_until": null})).await.expect(200);
    assert_eq!(records_for(&fakes.log(5, Duration::from_millis(700)).await, &sub).len(), 4, "nothing in DND");

    // Read on another device while a merged push waits: it is not sent when the window ends.
    let opened = wa.send_text(&dm, "first after unmute").await;
    fakes.log(5, T).await;
    let pending = wa.send_text(&dm, "merged, then read elsewhere").await;
    wb2.wait_for(|f| f["type"] == "message" && f["seq"] == pending["seq"], T).await;
    wb2.send_json(&json!({"type": "read", "conversation_id": dm, "seq": pending["seq"]})).await;
    let mine = records_for(&fakes.log(6, Duration::from_millis(4_000)).await, &sub).len();
    assert_eq!(mine, 5, "the read message was not pushed (the window opened at seq {})", opened["seq"]);

    // Fanout counted the commits' decisions before it delivered later frames (bob2 saw them).
    let suppressed = |reason: &'static str| {
        let srv = &srv;
        async move { metric(srv, &format!("parley_push_suppressed_total{{reason=\"{reason}\"}}")).await }
    };
    for reason in ["muted", "not_mentioned", "dnd", "read"] {
        assert!(suppressed(reason).await >= 1.0, "suppressed for {reason}");
    }
    // Connected, or (had the worker been slower than the device) acknowledged before it left.
    assert!(suppressed("online").await + suppressed("acknowledged").await >= 1.0);
    assert!(metric(&srv, "parley_push_coalesced_total").await >= 4.0);

    // The status shows the last success.
    let status = bob.get("/v1/push/status").await.expect(200);
    assert!(status["push"]["last_success_at"].is_i64(), "{status}");
    assert!(status["push"]["last_error"].is_null() && status["push"]["invalidated_at"].is_null(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_retries_and_reregistration() {
    let fakes = Fakes::start().await;
    let srv = server(&fakes, &["--push-coalesce-ms", "0"]).await;
    let (alice, bob) = pair(&srv).await;
    let (sub, body) = fakes.subscribe().await;
    bob.api().put("/v1/devices/current/push", &body, Some(&bob.token)).await.expect(200);
    let dm = alice.direct(bob.user_id()).await;
    let wa = alice.connect_synced().await;

    // 429 with Retry-After: retried no sooner than it says, and the status shows the error.
    fakes.script(&sub, json!([{"status": 429, "headers": {"retry-after": "1"}}])).await;
    let started = Instant::now();
    let m = wa.send_text(&dm, "retry me").await;
    let log = fakes.log(2, T).await;
    let mine = records_for(&log, &sub);
    assert_eq!(mine.len(), 2, "{log:?}");
    assert_eq!(mine[0]["status"], 429);
    assert_eq!(mine[1]["status"], 201);
    assert_eq!(mine[1]["payload"]["seq"], m["seq"]);
    let gap = mine[1]["received_at_ms"].as_i64().unwrap() - mine[0]["received_at_ms"].as_i64().unwrap();
    assert!(gap >= 950, "retried after {gap} ms, Retry-After said 1 s");
    assert!(started.elapsed() < Duration::from_secs(8));
    let status = bob.get("/v1/push/status").await.expect(200);
    assert_eq!(status["push"]["last_error"]["status"], 429, "{status}");

    // 410: invalidated, never pushed again, told on the next connect; registering again heals.
    fakes.script(&sub, json!([{"status": 410}])).await;
    wa.send_text(&dm, "gone").await;
    invalidated(&bob).await;
    let status = bob.get("/v1/push/status").await.expect(200);
    assert!(status["push"]["invalidated_at"].is_i64(), "{status}");
    assert_eq!(bob.post("/v1/push/test", &json!({})).await.status, 400, "an invalidated registration is not tested");
    wa.send_text(&dm, "not pushed").await;
    let wb = bob.connect().await;
    let f = wb.wait_for(|f| f["type"] == "push_invalidated", T).await;
    assert_eq!(f["kind"], "webpush");
    wb.close().await;
    let wb = bob.connect_synced().await;
    assert!(!wb.frames().iter().any(|f| f["type"] == "push_invalidated"), "told once");
    wb.close().await;
    assert_eq!(records_for(&fakes.log(4, Duration::from_millis(500)).await, &sub).len(), 3);

    let (sub2, body2) = fakes.subscribe().await;
    bob.api().put("/v1/devices/current/push", &body2, Some(&bob.token)).await.expect(200);
    let t = bob.post("/v1/push/test", &json!({})).await.expect(200);
    assert_eq!(t["ok"], true, "{t}");
    let again = wa.send_text(&dm, "back").await;
    let log = fakes.log(5, T).await;
    let fresh = records_for(&log, &sub2);
    assert_eq!(fresh.len(), 2, "{log:?}");
    assert_eq!(fresh[1]["payload"]["seq"], again["seq"]);

    // Signing out drops the registration.
    bob.delete("/v1/sessions/current").await;
    wa.send_text(&dm, "signed out").await;
    assert_eq!(fakes.log(6, Duration::from_millis(700)).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_and_fcm_requests_carry_verified_tokens_and_no_content() {
    let fakes = Fakes::start().await;
    let srv = server(&fakes, &["--push-coalesce-ms", "0"]).await;
    let (alice, bob) = pair(&srv).await;
    let phone = bob.user.login().await;
    let apns_token = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    phone
        .api()
        .put(
            "/v1/devices/current/push",
            &json!({"kind": "apns", "token": apns_token, "environment": "sandbox"}),
            Some(&phone.token),
        )
        .await
        .expect(200);
    let fcm_token = "fcm-registration-token-abc:APA91b";
    bob.api()
        .put("/v1/devices/current/push", &json!({"kind": "fcm", "token": fcm_token}), Some(&bob.token))
        .await
        .expect(200);
    let dm = alice.direct(bob.user_id()).await;
    let wa = alice.connect_synced().await;
    let markers = ["MARKER-apns-fcm", &alice.user.username, &bob.user.username, "Display"];
    // (The second is sent once the first is out: sooner, it would merge into the first.)
    let m1 = wa.send_text(&dm, "MARKER-apns-fcm one").await;
    fakes.log(3, T).await;
    let m2 = wa.send_text(&dm, "MARKER-apns-fcm two").await;
    let log = fakes.log(5, T).await;
    let apns = records_for(&log, apns_token);
    let fcm = records_for(&log, fcm_token);
    assert_eq!((apns.len(), fcm.len()), (2, 2), "{log:?}");
    for r in apns.iter().chain(&fcm) {
        assert_clean(r, &markers);
    }
    let p = &apns[1]["payload"];
    assert_eq!(
        (&p["v"], &p["type"], &p["conversation_id"], &p["seq"]),
        (&json!(1), &json!("message"), &json!(dm), &m2["seq"])
    );
    assert_eq!(apns[0]["headers"]["apns-collapse-id"], apns[1]["headers"]["apns-collapse-id"]);
    // FCM's data map holds strings only.
    let data = |r: &Value| -> Value {
        let body: Value = serde_json::from_str(r["raw_body"].as_str().unwrap()).unwrap();
        body["message"]["data"].clone()
    };
    assert_eq!(data(fcm[0])["seq"], m1["seq"].to_string());
    assert_eq!(data(fcm[1])["conversation_id"], dm);
    assert_eq!(data(fcm[1]).as_object().unwrap().len(), 5, "v, type, conversation_id, seq, unread_count only");
    let stats = fakes.stats().await;
    assert_eq!(stats["apns_jwts"], 1, "the provider token is reused: {stats}");
    assert_eq!(stats["fcm_token_grants"], 1, "the access token is cached: {stats}");

    // Gone answers invalidate; a 503 is retried.
    fakes.script(apns_token, json!([{"apns_reason": "BadDeviceToken"}])).await;
    fakes.script(fcm_token, json!([{"status": 503}, {"fcm_error": "UNREGISTERED"}])).await;
    wa.send_text(&dm, "three").await;
    invalidated(&phone).await;
    invalidated(&bob).await;
    assert_eq!(metric(&srv, "parley_push_invalidated_total{provider=\"apns\"}").await, 1.0);
    assert_eq!(metric(&srv, "parley_push_invalidated_total{provider=\"fcm\"}").await, 1.0);
    let st = bob.get("/v1/push/status").await.expect(200);
    assert_eq!(st["push"]["last_error"]["reason"], "UNREGISTERED", "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_due_when_the_server_is_killed_is_sent_after_restart() {
    let fakes = Fakes::start().await;
    let mut srv = server(&fakes, &[]).await;
    let (alice, bob) = pair(&srv).await;
    let (sub, body) = fakes.subscribe().await;
    bob.api().put("/v1/devices/current/push", &body, Some(&bob.token)).await.expect(200);
    let dm = alice.direct(bob.user_id()).await;
    // The push service holds the first request until the server is dead.
    fakes.script(&sub, json!([{"status": 201, "delay_ms": 4000}])).await;
    let sent = alice.connect_synced().await.send_text(&dm, "kill me").await;
    fakes.delayed(1).await;
    srv.kill9().await;
    srv.restart().await;
    let log = fakes.log(2, LONG).await;
    let mine = records_for(&log, &sub);
    assert!(mine.len() >= 2, "the push was sent again after the restart: {log:?}");
    assert!(mine.iter().all(|r| r["payload"]["seq"] == sent["seq"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_and_settings_refuse_bad_input() {
    let fakes = Fakes::start().await;
    let strict = TestServer::start().await;
    let d = strict.login().await;
    let (_, body) = fakes.subscribe().await;
    let put = |b: Value| {
        let d = d.clone();
        async move { d.api().put("/v1/devices/current/push", &b, Some(&d.token)).await }
    };
    put(body.clone()).await.expect_error(400, "bad_request");
    put(json!({"kind": "webpush", "endpoint": "ftp://push.example/x", "keys": body["keys"]}))
        .await
        .expect_error(400, "bad_request");
    put(json!({"kind": "webpush", "endpoint": "https://push.example/x", "keys": {"p256dh": "AAAA", "auth": "AAAA"}}))
        .await
        .expect_error(400, "bad_request");
    put(json!({"kind": "apns", "token": "abcd"})).await.expect_error(400, "bad_request");
    put(json!({"kind": "carrier-pigeon", "token": "x"})).await.expect_error(400, "bad_request");
    put(json!({"kind": "webpush"})).await.expect_error(400, "bad_request");
    assert!(d.get("/v1/push/status").await.expect(200)["push"].is_null());
    d.post("/v1/push/test", &json!({})).await.expect_error(400, "bad_request");

    // Settings: members only, and a stranger learns nothing.
    let other = strict.login().await;
    let conv = other.group("theirs", &[]).await;
    d.patch(&format!("/v1/conversations/{conv}/settings"), &json!({"notify": "none"}))
        .await
        .expect_error(404, "not_found");
    d.patch("/v1/conversations/424242/settings", &json!({"notify": "none"})).await.expect_error(404, "not_found");
    other
        .patch(&format!("/v1/conversations/{conv}/settings"), &json!({"notify": "sometimes"}))
        .await
        .expect_error(400, "bad_request");
    other
        .patch(&format!("/v1/conversations/{conv}/settings"), &json!({"muted_until": "soon"}))
        .await
        .expect_error(400, "bad_request");
    let st = other.patch(&format!("/v1/conversations/{conv}/settings"), &json!({"notify": "none"})).await.expect(200);
    assert_eq!(st["settings"], json!({"muted_until": null, "notify": "none"}));
}

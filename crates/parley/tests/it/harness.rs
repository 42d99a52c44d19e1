//! Black-box harness: runs the real `parley` binary on a free port with a fresh data directory
//! and talks to it over HTTP and WebSocket only, like a client would (PROTOCOL.md is the contract).
//!
//! Every wait is bounded and waits for an event (a frame, a close, a health answer); nothing
//! sleeps to "let things settle". The only sleeps are inside polling loops with a deadline.

#![allow(dead_code)]

use std::fs::OpenOptions;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMsg;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The default bound of a wait for one event.
pub(crate) const T: Duration = Duration::from_secs(10);
/// A longer bound, for waits on bulk work (a thousand-message replay, a restart).
pub(crate) const LONG: Duration = Duration::from_secs(30);
/// How long a server gets to answer `/healthz` after it is spawned.
const STARTUP: Duration = Duration::from_secs(20);
/// How long a graceful stop may take before the harness gives up and kills the process.
const STOP_DEADLINE: Duration = Duration::from_secs(15);

pub(crate) const PASSWORD: &str = "correct horse battery";

/// The admin token of servers started with `&["--admin-token", ADMIN_TOKEN]` (for
/// [`TestServer::bulk_logins`]).
pub(crate) const ADMIN_TOKEN: &str = "it-admin-token-not-secret";

/// A name no other call in this process returns: `prefix` plus hex of pid, clock and a counter.
pub(crate) fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}{:x}{nanos:x}{n:x}", std::process::id())
}

pub(crate) fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A string field of a JSON object, or a panic naming it.
pub(crate) fn s(v: &Value, field: &str) -> String {
    match v.get(field) {
        Some(Value::String(x)) => x.clone(),
        other => panic!("expected string field `{field}`, got {other:?} in {v}"),
    }
}

/// An integer field of a JSON object, or a panic naming it.
pub(crate) fn i(v: &Value, field: &str) -> i64 {
    v.get(field).and_then(Value::as_i64).unwrap_or_else(|| panic!("expected integer field `{field}` in {v}"))
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 300 {
        let mut cut = 300;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &text[..cut])
    } else {
        text
    }
}

// ------------------------------------------------------------------------------------------
// The server process
// ------------------------------------------------------------------------------------------

/// One `parley serve` process with its own data directory (deleted on drop) and port.
pub(crate) struct TestServer {
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    /// Environment variables the process gets on top of the test's (e.g. S3 credentials).
    env: Vec<(String, String)>,
    child: Option<Child>,
    api: Api,
}

impl TestServer {
    pub(crate) async fn start() -> TestServer {
        Self::start_with(&[]).await
    }

    /// Starts the server with extra `parley serve` flags, e.g. `&["--auth-timeout-ms", "300"]`.
    pub(crate) async fn start_with(extra: &[&str]) -> TestServer {
        Self::start_with_env(extra, &[]).await
    }

    /// Starts the server with extra flags and environment variables.
    pub(crate) async fn start_with_env(extra: &[&str], env: &[(&str, String)]) -> TestServer {
        let dir = tempfile::Builder::new().prefix("parley-it-").tempdir().expect("temp dir");
        let port = free_port();
        let mut srv = TestServer {
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            child: None,
            api: Api::new(port),
        };
        // The free port is released before the server binds it; another process may take it in
        // between, so a failed start gets a new port (a restart keeps its port).
        let mut attempt = 0;
        loop {
            match srv.spawn().await {
                Ok(()) => return srv,
                Err(e) if attempt < 2 => {
                    eprintln!("server start failed ({e}); retrying on another port");
                    attempt += 1;
                    srv.port = free_port();
                    srv.api = Api::new(srv.port);
                }
                Err(e) => panic!("server did not start: {e}\n{}", srv.log_tail(40)),
            }
        }
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The last `n` lines of the server's log, for failure messages.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub(crate) fn api(&self) -> &Api {
        &self.api
    }

    pub(crate) fn ws_url(&self) -> String {
        self.api.ws_url()
    }

    async fn spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "the server is already running");
        let log =
            OpenOptions::new().create(true).append(true).open(self.log_path()).map_err(|e| format!("log file: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_parley"));
        // Settings come from the flags alone, whatever the environment of the test run holds.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PARLEY_") {
                cmd.env_remove(k);
            }
        }
        // Plain log lines, whatever the terminal.
        cmd.env("NO_COLOR", "1");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        loop {
            let child = self.child.as_mut().expect("child");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!("the server exited with {status} while starting"));
            }
            if let Ok(r) = self.api.http.get(self.api.url("/healthz")).timeout(Duration::from_secs(1)).send().await
                && r.status().as_u16() == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill9().await;
                return Err(format!("no healthy answer within {STARTUP:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and reap the process.
    pub(crate) async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            tokio::time::timeout(T, child.wait())
                .await
                .expect("a killed server is reaped within 10 s")
                .expect("wait for the killed server");
        }
    }

    /// SIGTERM (graceful drain), then wait for the exit with a deadline; returns the exit
    /// status. Past the deadline the process is killed and this panics.
    pub(crate) async fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the server is not running");
        let pid = child.id().expect("a running child has a pid");
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill -TERM")
            .success();
        assert!(ok, "kill -TERM {pid} failed");
        match tokio::time::timeout(STOP_DEADLINE, child.wait()).await {
            Ok(status) => status.expect("wait for the server"),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                panic!("the server did not exit within {STOP_DEADLINE:?} of SIGTERM\n{}", self.log_tail(40));
            }
        }
    }

    /// Starts the server again on the same port and data directory (stopping it gracefully
    /// first if it still runs).
    pub(crate) async fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.stop().await;
            assert!(status.success(), "graceful stop exited with {status}");
        }
        // The old process is gone, but its port may take a moment to be free for a new bind.
        let mut attempt = 0;
        loop {
            match self.spawn().await {
                Ok(()) => return,
                Err(e) if attempt < 3 => {
                    eprintln!("restart failed ({e}); retrying");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("server did not restart: {e}\n{}", self.log_tail(40)),
            }
        }
    }

    // --- REST shortcuts ---

    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.api.get(path, token).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Resp {
        self.api.post(path, body, token).await
    }

    pub(crate) async fn post_raw(&self, path: &str, body: &str, token: Option<&str>) -> Resp {
        self.api.post_raw(path, body, token).await
    }

    pub(crate) async fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.api.delete(path, token).await
    }

    pub(crate) async fn patch(&self, path: &str, body: &Value, token: Option<&str>) -> Resp {
        self.api.patch(path, body, token).await
    }

    /// A new account with a random name.
    pub(crate) async fn user(&self) -> User {
        self.api.user().await
    }

    /// A new account with a random name, signed in on one device.
    pub(crate) async fn login(&self) -> Device {
        self.user().await.login().await
    }

    /// `n` new accounts, each signed in on one device (created concurrently).
    pub(crate) async fn logins(&self, n: usize) -> Vec<Device> {
        futures_util::future::join_all((0..n).map(|_| self.login())).await
    }

    /// `n` new accounts made in one call of the admin API, each with its one provisioned device.
    /// The server must run with `--admin-token ADMIN_TOKEN`.
    pub(crate) async fn bulk_logins(&self, n: usize) -> Vec<Device> {
        self.api.bulk_logins(ADMIN_TOKEN, n).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- server log ({}) ----\n{}\n---- end of server log ----",
                self.log_path().display(),
                self.log_tail(60)
            );
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

// ------------------------------------------------------------------------------------------
// REST
// ------------------------------------------------------------------------------------------

/// A REST answer: the status, the JSON body (`Null` when empty, a JSON string when not JSON)
/// and the headers.
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
    /// Whether the body parsed as JSON (an empty body does not).
    pub is_json: bool,
}

impl Resp {
    /// The `error.code` of an error answer.
    pub(crate) fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<no error code>")
    }

    /// Asserts the status and returns the body.
    pub(crate) fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        self.body
    }

    /// Asserts an error answer: the status and a JSON `{"error": {"code", "message"}}` body.
    pub(crate) fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        assert!(self.is_json, "error bodies are JSON; got {:?}", self.body);
        assert_eq!(self.code(), code, "wrong error code; body: {}", self.body);
        assert!(self.body["error"]["message"].is_string(), "error has a message: {}", self.body);
    }
}

/// The server's HTTP address and a client; cheap to clone.
#[derive(Clone)]
pub(crate) struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    fn new(port: u16) -> Api {
        Api {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().expect("http client"),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub(crate) fn ws_url(&self) -> String {
        format!("{}/v1/ws", self.base.replacen("http://", "ws://", 1))
    }

    pub(crate) async fn run(&self, mut req: reqwest::RequestBuilder, token: Option<&str>) -> Resp {
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("HTTP request failed: {e:?}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("HTTP body");
        let (body, is_json) = match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => (v, true),
            Err(_) if bytes.is_empty() => (Value::Null, false),
            Err(_) => (Value::String(String::from_utf8_lossy(&bytes).into_owned()), false),
        };
        Resp { status, body, headers, is_json }
    }

    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.run(self.http.get(self.url(path)), token).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Resp {
        self.run(self.http.post(self.url(path)).json(body), token).await
    }

    /// POST with a body sent as is (to test malformed bodies), labelled as JSON.
    pub(crate) async fn post_raw(&self, path: &str, body: &str, token: Option<&str>) -> Resp {
        let req = self.http.post(self.url(path)).header("content-type", "application/json").body(body.to_owned());
        self.run(req, token).await
    }

    pub(crate) async fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.run(self.http.delete(self.url(path)), token).await
    }

    pub(crate) async fn patch(&self, path: &str, body: &Value, token: Option<&str>) -> Resp {
        self.run(self.http.patch(self.url(path)).json(body), token).await
    }

    pub(crate) async fn put(&self, path: &str, body: &Value, token: Option<&str>) -> Resp {
        self.run(self.http.put(self.url(path)).json(body), token).await
    }

    /// `POST /v1/admin/accounts`: `count` accounts `{prefix}{n}` with `password`, in one call.
    pub(crate) async fn bulk_accounts(&self, admin_token: &str, prefix: &str, count: usize, password: &str) -> Resp {
        let body = json!({"prefix": prefix, "count": count, "password": password});
        self.post("/v1/admin/accounts", &body, Some(admin_token)).await
    }

    /// `n` new accounts (password [`PASSWORD`]) made by the admin API, each signed in on the one
    /// device the call provisions.
    pub(crate) async fn bulk_logins(&self, admin_token: &str, n: usize) -> Vec<Device> {
        let prefix = format!("{}-", unique("b"));
        let body = self.bulk_accounts(admin_token, &prefix, n, PASSWORD).await.expect(201);
        let accounts = body["accounts"].as_array().expect("accounts array");
        assert_eq!(accounts.len(), n, "one account per count");
        accounts
            .iter()
            .enumerate()
            .map(|(k, a)| {
                assert_eq!(s(a, "username"), format!("{prefix}{k}"), "usernames are {{prefix}}{{n}}: {a}");
                let user = User {
                    api: self.clone(),
                    username: s(a, "username"),
                    password: PASSWORD.into(),
                    user_id: s(a, "user_id"),
                };
                Device { user, device_id: s(a, "device_id"), token: s(a, "token") }
            })
            .collect()
    }

    pub(crate) async fn user(&self) -> User {
        let name = unique("u");
        let r = self.post("/v1/accounts", &json!({"username": name, "password": PASSWORD}), None).await;
        let body = r.expect(201);
        assert_eq!(s(&body, "username"), name);
        User { api: self.clone(), username: name, password: PASSWORD.into(), user_id: s(&body, "user_id") }
    }
}

/// An account.
#[derive(Clone)]
pub(crate) struct User {
    pub api: Api,
    pub username: String,
    pub password: String,
    pub user_id: String,
}

impl User {
    /// Signs in: a new device.
    pub(crate) async fn login(&self) -> Device {
        self.login_as("test device").await
    }

    pub(crate) async fn login_as(&self, device_name: &str) -> Device {
        let r = self
            .api
            .post(
                "/v1/sessions",
                &json!({"username": self.username, "password": self.password, "device_name": device_name}),
                None,
            )
            .await;
        let body = r.expect(201);
        assert_eq!(s(&body, "user_id"), self.user_id);
        Device { user: self.clone(), device_id: s(&body, "device_id"), token: s(&body, "token") }
    }
}

/// A signed-in device of a user: its token for REST and the WebSocket.
#[derive(Clone)]
pub(crate) struct Device {
    pub user: User,
    pub device_id: String,
    pub token: String,
}

impl Device {
    pub(crate) fn user_id(&self) -> &str {
        &self.user.user_id
    }

    pub(crate) fn api(&self) -> &Api {
        &self.user.api
    }

    pub(crate) async fn get(&self, path: &str) -> Resp {
        self.api().get(path, Some(&self.token)).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Resp {
        self.api().post(path, body, Some(&self.token)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> Resp {
        self.api().delete(path, Some(&self.token)).await
    }

    pub(crate) async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.api().patch(path, body, Some(&self.token)).await
    }

    /// A new group with this user as its admin and `member_ids` as members; its id.
    pub(crate) async fn group(&self, title: &str, member_ids: &[&str]) -> String {
        let r =
            self.post("/v1/conversations", &json!({"kind": "group", "title": title, "member_ids": member_ids})).await;
        s(&r.expect(201)["conversation"], "conversation_id")
    }

    /// The direct conversation with `other_user_id` (created if needed); its id.
    pub(crate) async fn direct(&self, other_user_id: &str) -> String {
        let r = self.post("/v1/conversations", &json!({"kind": "direct", "user_id": other_user_id})).await;
        assert!(r.status == 200 || r.status == 201, "create direct: {} {}", r.status, r.body);
        s(&r.body["conversation"], "conversation_id")
    }

    /// The conversation as this user sees it.
    pub(crate) async fn conversation(&self, conv: &str) -> Value {
        let r = self.get(&format!("/v1/conversations/{conv}")).await;
        r.expect(200)["conversation"].clone()
    }

    /// The whole history this user may read, oldest first, read page by page.
    pub(crate) async fn history(&self, conv: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut after = 0;
        loop {
            let r = self.get(&format!("/v1/conversations/{conv}/messages?after_seq={after}&limit=200")).await;
            let page = r.expect(200)["messages"].as_array().expect("messages array").clone();
            let n = page.len();
            if let Some(last) = page.last() {
                after = i(last, "seq");
            }
            out.extend(page);
            if n < 200 {
                return out;
            }
        }
    }

    /// Posts a text message over REST; returns the status and the message.
    pub(crate) async fn post_text(&self, conv: &str, client_id: &str, text: &str) -> (u16, Value) {
        let r = self
            .post(
                &format!("/v1/conversations/{conv}/messages"),
                &json!({"client_id": client_id, "kind": "text", "body": {"text": text}}),
            )
            .await;
        let status = r.status;
        (status, r.body["message"].clone())
    }

    /// A WebSocket for this device, authenticated (`ready` checked).
    pub(crate) async fn connect(&self) -> Ws {
        self.authenticate(Ws::connect(&self.api().ws_url()).await).await
    }

    /// Like [`Device::connect_synced`], on a socket with small buffers, for tests that hold a
    /// thousand connections at once.
    pub(crate) async fn connect_lean(&self) -> Ws {
        let ws = self.authenticate(Ws::connect_lean(&self.api().ws_url()).await).await;
        ws.wait_synced(LONG).await;
        ws
    }

    async fn authenticate(&self, ws: Ws) -> Ws {
        ws.send_json(&json!({"type": "auth", "token": self.token})).await;
        let ready = ws.wait_for(|f| matches!(f["type"].as_str(), Some("ready" | "error")), T).await;
        assert_eq!(ready["type"], "ready", "auth refused: {ready}");
        assert_eq!(s(&ready, "user_id"), self.user.user_id);
        assert_eq!(s(&ready, "device_id"), self.device_id);
        assert!(ready["server_time"].is_i64(), "server_time: {ready}");
        ws
    }

    /// A WebSocket for this device whose backlog replay has finished (`synced` seen).
    pub(crate) async fn connect_synced(&self) -> Ws {
        let ws = self.connect().await;
        ws.wait_synced(LONG).await;
        ws
    }
}

// ------------------------------------------------------------------------------------------
// WebSocket
// ------------------------------------------------------------------------------------------

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a connection ended: the close code the server sent (`None` when the socket ended
/// without a close frame) and a description.
#[derive(Clone, Debug)]
pub(crate) struct Closed {
    pub code: Option<u16>,
    pub reason: String,
}

struct Shared {
    frames: Mutex<Vec<Value>>,
    closed: Mutex<Option<Closed>>,
    /// Bumped after every change of `frames` or `closed`.
    tick: watch::Sender<u64>,
}

impl Shared {
    fn bump(&self) {
        self.tick.send_modify(|n| *n += 1);
    }
}

/// One raw WebSocket connection. A background task collects every server frame in order (text
/// frames parsed as JSON; a binary frame is recorded as `{"type": "<binary>"}`).
pub(crate) struct Ws {
    sink: tokio::sync::Mutex<SplitSink<Stream, WsMsg>>,
    shared: Arc<Shared>,
    paused: watch::Sender<bool>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Ws {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Ws {
    /// Connects without authenticating.
    pub(crate) async fn connect(url: &str) -> Ws {
        Self::connect_with(url, None).await
    }

    /// Connects without authenticating, with a 4 KiB read buffer instead of a 128 KiB one (it
    /// grows when a frame needs it), so a thousand connections stay cheap.
    pub(crate) async fn connect_lean(url: &str) -> Ws {
        let config = WebSocketConfig::default().read_buffer_size(4096);
        Self::connect_with(url, Some(config)).await
    }

    async fn connect_with(url: &str, config: Option<WebSocketConfig>) -> Ws {
        let (stream, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async_with_config(url, config, false))
            .await
            .expect("WebSocket connect timed out")
            .expect("WebSocket connect");
        let (sink, stream) = stream.split();
        let (tick, _) = watch::channel(0);
        let shared = Arc::new(Shared { frames: Mutex::new(Vec::new()), closed: Mutex::new(None), tick });
        let (paused, paused_rx) = watch::channel(false);
        let reader = tokio::spawn(read_loop(stream, shared.clone(), paused_rx));
        Ws { sink: tokio::sync::Mutex::new(sink), shared, paused, reader }
    }

    pub(crate) async fn try_send(&self, msg: WsMsg) -> Result<(), String> {
        let mut sink = self.sink.lock().await;
        tokio::time::timeout(LONG, sink.send(msg))
            .await
            .map_err(|_| "send timed out".to_string())?
            .map_err(|e| format!("send failed: {e}"))
    }

    pub(crate) async fn try_send_json(&self, frame: &Value) -> Result<(), String> {
        self.try_send(WsMsg::text(frame.to_string())).await
    }

    pub(crate) async fn send_json(&self, frame: &Value) {
        self.try_send_json(frame).await.unwrap_or_else(|e| panic!("{e}"));
    }

    /// Writes `frames` back to back and flushes once, so they reach the server in as few TCP
    /// segments as the socket allows.
    pub(crate) async fn send_all(&self, frames: &[Value]) -> Result<(), String> {
        let mut sink = self.sink.lock().await;
        let writing = async {
            for f in frames {
                sink.feed(WsMsg::text(f.to_string())).await?;
            }
            sink.flush().await
        };
        tokio::time::timeout(LONG, writing)
            .await
            .map_err(|_| "send timed out".to_string())?
            .map_err(|e| format!("send failed: {e}"))
    }

    /// Sends a text frame exactly as given (malformed JSON, say).
    pub(crate) async fn send_text_raw(&self, text: impl Into<String>) {
        let text: String = text.into();
        self.try_send(WsMsg::text(text)).await.unwrap_or_else(|e| panic!("{e}"));
    }

    pub(crate) async fn send_binary(&self, bytes: Vec<u8>) {
        self.try_send(WsMsg::binary(bytes)).await.unwrap_or_else(|e| panic!("{e}"));
    }

    /// Sends a close frame and waits (bounded) for the server to finish the close.
    pub(crate) async fn close(self) {
        let _ = self.try_send(WsMsg::Close(None)).await;
        let _ = self.wait_closed(T).await;
    }

    /// Every server frame so far, in order.
    pub(crate) fn frames(&self) -> Vec<Value> {
        self.shared.frames.lock().unwrap().clone()
    }

    /// How many server frames arrived so far.
    pub(crate) fn len(&self) -> usize {
        self.shared.frames.lock().unwrap().len()
    }

    pub(crate) fn closed(&self) -> Option<Closed> {
        self.shared.closed.lock().unwrap().clone()
    }

    /// Stops reading from the socket (after at most the frame being read), so what the server
    /// sends piles up in its queue; `resume_reading` reads on.
    pub(crate) fn pause_reading(&self) {
        self.paused.send_replace(true);
    }

    pub(crate) fn resume_reading(&self) {
        self.paused.send_replace(false);
    }

    /// Waits until `check` (given all frames so far) returns `Some`. Fails when the deadline
    /// passes or the connection closes first.
    async fn wait_until<R>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&[Value]) -> Option<R>,
    ) -> Result<R, String> {
        let mut rx = self.shared.tick.subscribe();
        let waiting = async {
            loop {
                rx.borrow_and_update();
                // Frames are recorded before the close, so a close seen here means every
                // frame is already in `frames`.
                let closed = self.closed();
                if let Some(r) = check(&self.shared.frames.lock().unwrap()) {
                    return Ok(r);
                }
                if let Some(c) = closed {
                    return Err(format!("the connection closed ({c:?})"));
                }
                if rx.changed().await.is_err() {
                    return Err("the reader is gone".to_string());
                }
            }
        };
        match tokio::time::timeout(timeout, waiting).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(format!("{e}; {}", self.describe())),
            Err(_) => Err(format!("timed out after {timeout:?}; {}", self.describe())),
        }
    }

    fn describe(&self) -> String {
        let frames = self.shared.frames.lock().unwrap();
        let last: Vec<String> = frames[frames.len().saturating_sub(5)..].iter().map(short).collect();
        format!("{} frames so far, the last ones: [{}]", frames.len(), last.join(", "))
    }

    /// The first frame at index `start` or later that matches `pred`.
    pub(crate) async fn try_wait_for_from(
        &self,
        start: usize,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value, String> {
        let mut pos = start;
        self.wait_until(timeout, |frames| {
            while pos < frames.len() {
                if pred(&frames[pos]) {
                    return Some(frames[pos].clone());
                }
                pos += 1;
            }
            None
        })
        .await
    }

    pub(crate) async fn wait_for_from(&self, start: usize, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        self.try_wait_for_from(start, pred, timeout).await.unwrap_or_else(|e| panic!("wait_for: {e}"))
    }

    /// The first frame (of all so far or to come) that matches `pred`.
    pub(crate) async fn wait_for(&self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        self.wait_for_from(0, pred, timeout).await
    }

    /// Waits until `n` frames match `pred`; returns them (all matches so far, at least `n`).
    pub(crate) async fn try_wait_count(
        &self,
        pred: impl Fn(&Value) -> bool,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Value>, String> {
        let mut pos = 0;
        let mut count = 0;
        self.wait_until(timeout, |frames| {
            while pos < frames.len() {
                if pred(&frames[pos]) {
                    count += 1;
                }
                pos += 1;
            }
            (count >= n).then(|| frames.iter().filter(|f| pred(f)).cloned().collect())
        })
        .await
    }

    pub(crate) async fn wait_count(&self, pred: impl Fn(&Value) -> bool, n: usize, timeout: Duration) -> Vec<Value> {
        self.try_wait_count(pred, n, timeout).await.unwrap_or_else(|e| panic!("wait_count({n}): {e}"))
    }

    /// Waits for `synced`; returns its index among the frames.
    pub(crate) async fn wait_synced(&self, timeout: Duration) -> usize {
        self.wait_until(timeout, |frames| frames.iter().position(|f| f["type"] == "synced"))
            .await
            .unwrap_or_else(|e| panic!("waiting for synced: {e}"))
    }

    /// The `message` frames of `conv`, in arrival order.
    pub(crate) fn messages(&self, conv: &str) -> Vec<Value> {
        self.shared
            .frames
            .lock()
            .unwrap()
            .iter()
            .filter(|f| f["type"] == "message" && f["conversation_id"] == conv)
            .cloned()
            .collect()
    }

    /// The `message` frames of `conv` of kind `text`, in arrival order.
    pub(crate) fn texts(&self, conv: &str) -> Vec<Value> {
        self.messages(conv).into_iter().filter(|m| m["kind"] == "text").collect()
    }

    /// Sends `frame` with a fresh `ref` (unless it has one) and returns the server's answer
    /// to it (the first later frame carrying that `ref`).
    pub(crate) async fn request(&self, mut frame: Value) -> Value {
        if frame.get("ref").is_none() {
            frame["ref"] = Value::String(unique("r"));
        }
        let r#ref = frame["ref"].clone();
        let start = self.len();
        self.send_json(&frame).await;
        self.wait_for_from(start, |f| f["ref"] == r#ref, T).await
    }

    /// Like [`Ws::request`], and asserts the answer is an `error` with `code`.
    pub(crate) async fn expect_error(&self, frame: Value, code: &str) -> Value {
        let shown = short(&frame);
        let reply = self.request(frame).await;
        assert_eq!(reply["type"], "error", "expected an error for {shown}: {reply}");
        assert_eq!(reply["code"], code, "wrong error code for {shown}: {reply}");
        assert!(reply["message"].is_string(), "error has a message: {reply}");
        reply
    }

    /// A `send` frame of a text message.
    pub(crate) fn text_frame(conv: &str, client_id: &str, text: &str) -> Value {
        json!({
            "type": "send",
            "ref": unique("s"),
            "conversation_id": conv,
            "client_id": client_id,
            "kind": "text",
            "body": {"text": text},
        })
    }

    /// Sends a text message with a fresh client id and returns the `sent` answer.
    pub(crate) async fn send_text(&self, conv: &str, text: &str) -> Value {
        self.send_text_with(conv, &unique("c"), text).await
    }

    /// Sends a text message with `client_id` and returns the `sent` answer.
    pub(crate) async fn send_text_with(&self, conv: &str, client_id: &str, text: &str) -> Value {
        let reply = self.request(Self::text_frame(conv, client_id, text)).await;
        assert_eq!(reply["type"], "sent", "send was refused: {reply}");
        reply
    }

    /// Sends `frames` back to back (each gets a fresh `ref` unless it has one) without waiting,
    /// then waits for every answer; returns the answers in the order of `frames`.
    pub(crate) async fn pipeline(&self, frames: Vec<Value>) -> Vec<Value> {
        let start = self.len();
        let mut index = std::collections::HashMap::new();
        let mut batch = Vec::with_capacity(frames.len());
        for (n, mut frame) in frames.into_iter().enumerate() {
            if frame.get("ref").is_none() {
                frame["ref"] = Value::String(unique("p"));
            }
            index.insert(s(&frame, "ref"), n);
            batch.push(frame);
        }
        self.send_all(&batch).await.unwrap_or_else(|e| panic!("pipeline: {e}"));
        let total = index.len();
        let mut answers: Vec<Option<Value>> = vec![None; total];
        let mut pos = start;
        let mut got = 0;
        self.wait_until(LONG, |all| {
            while pos < all.len() {
                if let Some(&n) = all[pos]["ref"].as_str().and_then(|r| index.get(r))
                    && answers[n].is_none()
                {
                    answers[n] = Some(all[pos].clone());
                    got += 1;
                }
                pos += 1;
            }
            (got == total).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("pipeline ({got} of {total} answered): {e}"));
        answers.into_iter().map(Option::unwrap).collect()
    }

    /// Sends `n` text messages `"{prefix}{k}"` pipelined; returns the `sent` answers in order.
    pub(crate) async fn send_texts(&self, conv: &str, prefix: &str, n: usize) -> Vec<Value> {
        let frames = (0..n).map(|k| Self::text_frame(conv, &unique("c"), &format!("{prefix}{k}"))).collect();
        let answers = self.pipeline(frames).await;
        for a in &answers {
            assert_eq!(a["type"], "sent", "send was refused: {a}");
        }
        answers
    }

    /// A ping whose pong proves every earlier frame of this connection has taken effect.
    pub(crate) async fn barrier(&self) {
        let reply = self.request(json!({"type": "ping"})).await;
        assert_eq!(reply["type"], "pong", "ping answered with {reply}");
    }

    /// Waits for the connection to end; returns how.
    pub(crate) async fn wait_closed(&self, timeout: Duration) -> Result<Closed, String> {
        let mut rx = self.shared.tick.subscribe();
        let waiting = async {
            loop {
                rx.borrow_and_update();
                if let Some(c) = self.closed() {
                    return c;
                }
                if rx.changed().await.is_err() {
                    return Closed { code: None, reason: "the reader is gone".into() };
                }
            }
        };
        tokio::time::timeout(timeout, waiting)
            .await
            .map_err(|_| format!("still open after {timeout:?}; {}", self.describe()))
    }

    /// Waits (bounded) for the connection to end and returns the server's close code.
    pub(crate) async fn closed_with(&self) -> Option<u16> {
        self.wait_closed(T).await.unwrap_or_else(|e| panic!("expected a close: {e}")).code
    }
}

async fn read_loop(mut stream: SplitStream<Stream>, shared: Arc<Shared>, mut paused: watch::Receiver<bool>) {
    let mut closed: Option<Closed> = None;
    loop {
        while *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                return;
            }
        }
        let Some(item) = stream.next().await else {
            break;
        };
        match item {
            Ok(WsMsg::Text(t)) => {
                let v = serde_json::from_str(t.as_str())
                    .unwrap_or_else(|_| json!({"type": "<not json>", "text": t.as_str()}));
                shared.frames.lock().unwrap().push(v);
                shared.bump();
            }
            Ok(WsMsg::Binary(_)) => {
                shared.frames.lock().unwrap().push(json!({"type": "<binary>"}));
                shared.bump();
            }
            Ok(WsMsg::Close(frame)) => {
                closed = Some(Closed {
                    code: frame.as_ref().map(|f| u16::from(f.code)),
                    reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                });
            }
            Ok(_) => {}
            Err(e) => {
                if closed.is_none() {
                    closed = Some(Closed { code: None, reason: format!("socket error: {e}") });
                }
                break;
            }
        }
    }
    *shared.closed.lock().unwrap() =
        Some(closed.unwrap_or(Closed { code: None, reason: "the socket ended without a close frame".into() }));
    shared.bump();
}

/// The `seq` of each message (frame or history entry).
pub(crate) fn seqs(messages: &[Value]) -> Vec<i64> {
    messages.iter().map(|m| i(m, "seq")).collect()
}

/// The `message` frames of `conv` that arrived before `synced` (at index `synced_at`).
pub(crate) fn replayed(ws: &Ws, conv: &str, synced_at: usize) -> Vec<Value> {
    ws.frames()[..synced_at]
        .iter()
        .filter(|f| f["type"] == "message" && f["conversation_id"] == conv)
        .cloned()
        .collect()
}

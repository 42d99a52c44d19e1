//! A live WebSocket session: a background task owns the socket, reconnects with backoff,
//! de-duplicates messages, coalesces acks and matches replies to requests by `ref`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use parley_proto::frames::{
    ClientFrame, DeviceListChanged, ErrorFrame, FrameHead, KeysLow, Presence, Ready, Receipt, SendFrame, Sent,
    ToDeviceIn, ToDeviceOut, ToDeviceSent, Typing, close,
};
use parley_proto::{Conversation, ErrorCode, Id, Message};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};
use tracing::{debug, warn};

use crate::error::{ClientError, Result};
use crate::new_client_id;
use crate::rest::ws_url;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Commands queued from [`Connection`] handles to the task; bounded so a flood of calls waits
/// instead of growing memory.
const COMMAND_CAPACITY: usize = 1024;
/// Inbound frames handled back to back before the task looks at commands and flushes acks, so a
/// long replay neither starves sends nor holds the delivery cursor back until it ends.
const DRAIN_BUDGET: usize = 256;
/// How long a closing socket gets to finish the close handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Ack received messages automatically (coalesced to the highest seq per conversation).
    pub auto_ack: bool,
    /// Reconnect after a drop, unless the server closed with 4001 or 4010.
    pub reconnect: bool,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Bound on every request (`send`, `ping`, `close`) and on each connect attempt.
    pub request_timeout: Duration,
    pub event_capacity: usize,
    /// The local address to connect from (plain `ws://` only). A load generator spreads its
    /// sockets over several `127.0.0.x` addresses: each source address has its own ~28,000
    /// ephemeral ports towards one server port.
    pub local_addr: Option<std::net::IpAddr>,
    /// Other nodes of the same cluster (base URLs like the one given to `connect`). After a
    /// drop, reconnects go to the next node in turn, so a client whose node died carries on at
    /// another and resyncs from its cursor.
    pub other_servers: Vec<String>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            auto_ack: true,
            reconnect: true,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            event_capacity: 10_000,
            local_addr: None,
            other_servers: Vec::new(),
        }
    }
}

/// What the connection tells the application, in the order the server sent it.
#[derive(Clone, Debug)]
pub enum Event {
    Ready {
        user_id: Id,
        device_id: Id,
    },
    Synced,
    Message(Message),
    Receipt(Receipt),
    Typing(Typing),
    Presence(Presence),
    Conversation(Box<Conversation>),
    /// An `error` frame that answered no pending request (e.g. to `send_raw` or `ack`).
    Error(ErrorFrame),
    /// A to-device payload queued for this device (key exchange). Once handled, acknowledge it
    /// with [`Connection::to_device_ack`] or it comes again on the next connect. Repeats of ids
    /// already handed over on this connection are dropped.
    ToDevice(ToDeviceIn),
    /// A user who shares a conversation with us added, set up or removed a device.
    DeviceListChanged(DeviceListChanged),
    /// This device is running out of one-time keys on the server: upload more.
    KeysLow(KeysLow),
    /// The socket dropped. Unless it was terminal (4001, 4010, `close()`, reconnect off), a
    /// `Reconnected` follows; otherwise the event stream ends after this.
    Disconnected {
        code: Option<u16>,
        reason: String,
    },
    Reconnected,
}

enum Command {
    Send { frame: SendFrame, reply: oneshot::Sender<Result<Sent>> },
    ToDevice { client_id: String, messages: Vec<ToDeviceOut>, reply: oneshot::Sender<Result<ToDeviceSent>> },
    Ping { reply: oneshot::Sender<Result<()>> },
    Frame(ClientFrame),
    Raw(String),
    Close { done: oneshot::Sender<Result<()>> },
}

/// A handle to the session. Clones share the one socket; when the last is dropped the task
/// closes the socket.
#[derive(Clone, Debug)]
pub struct Connection {
    cmds: mpsc::Sender<Command>,
    timeout: Duration,
    user_id: Id,
    device_id: Id,
}

impl Connection {
    /// Connects, authenticates and waits for `ready`. The first attempt is not retried: a bad
    /// token is `ClientError::Api { code: Unauthorized, .. }`.
    pub async fn connect(
        base_url: &str,
        token: &str,
        opts: ConnectOptions,
    ) -> Result<(Connection, mpsc::Receiver<Event>)> {
        let url = ws_url(base_url);
        let (ws, ready) = timeout(opts.request_timeout, open(&url, token, opts.local_addr))
            .await
            .map_err(|_| ClientError::Timeout)??;
        let (events, events_rx) = mpsc::channel(opts.event_capacity.max(1));
        let (cmds, cmds_rx) = mpsc::channel(COMMAND_CAPACITY);
        // The channel is empty, so this cannot wait.
        let _ = events.send(Event::Ready { user_id: ready.user_id, device_id: ready.device_id }).await;
        let conn =
            Connection { cmds, timeout: opts.request_timeout, user_id: ready.user_id, device_id: ready.device_id };
        let task = Task {
            url,
            token: token.to_string(),
            opts,
            events,
            cmds: cmds_rx,
            next_ref: 0,
            sends: BTreeMap::new(),
            pings: HashMap::new(),
            queued_pings: Vec::new(),
            dedupe: Dedupe::default(),
            acks: HashMap::new(),
            to_device_ack: None,
            to_device_seen: None,
            presence: HashSet::new(),
        };
        tokio::spawn(task.run(ws));
        Ok((conn, events_rx))
    }

    pub fn user_id(&self) -> Id {
        self.user_id
    }

    pub fn device_id(&self) -> Id {
        self.device_id
    }

    /// Sends a message with a fresh client id; retried across reconnects until `sent`.
    pub async fn send(&self, conv: Id, kind: &str, body: Value) -> Result<Sent> {
        self.send_with_client_id(conv, new_client_id(), kind, body).await
    }

    pub async fn send_text(&self, conv: Id, text: &str) -> Result<Sent> {
        self.send(conv, "text", json!({ "text": text })).await
    }

    /// Like [`Connection::send`] with the caller's `client_id`, e.g. one persisted in an outbox.
    pub async fn send_with_client_id(
        &self,
        conv: Id,
        client_id: impl Into<String>,
        kind: &str,
        body: Value,
    ) -> Result<Sent> {
        let frame = SendFrame { conversation_id: conv, client_id: client_id.into(), kind: kind.into(), body };
        self.request(|reply| Command::Send { frame, reply }).await
    }

    /// Queues per-device payloads (`to_device`) and waits until the server has durably queued
    /// every one (`to_device_sent`). Retried across reconnects with the same `client_id`, which
    /// the server queues only once.
    pub async fn send_to_device(
        &self,
        client_id: impl Into<String>,
        messages: Vec<ToDeviceOut>,
    ) -> Result<ToDeviceSent> {
        let client_id = client_id.into();
        self.request(|reply| Command::ToDevice { client_id, messages, reply }).await
    }

    /// Removes this device's queued to-device payloads up to `up_to_id` (kept across a drop and
    /// written after the reconnect).
    pub async fn to_device_ack(&self, up_to_id: impl Into<String>) -> Result<()> {
        self.fire(ClientFrame::ToDeviceAck { up_to_id: up_to_id.into() }).await
    }

    /// Waits for a `pong`: every frame sent before it has then taken effect on the server. Fails
    /// with `Closed` if the socket drops first; issued while disconnected, it waits for the
    /// reconnect.
    pub async fn ping(&self) -> Result<()> {
        self.request(|reply| Command::Ping { reply }).await
    }

    pub async fn ack(&self, conv: Id, seq: i64) -> Result<()> {
        self.fire(ClientFrame::Ack { conversation_id: conv, seq }).await
    }

    pub async fn read(&self, conv: Id, seq: i64) -> Result<()> {
        self.fire(ClientFrame::Read { conversation_id: conv, seq }).await
    }

    pub async fn typing(&self, conv: Id, active: bool) -> Result<()> {
        self.fire(ClientFrame::Typing { conversation_id: conv, active }).await
    }

    /// Subscriptions are remembered and renewed after a reconnect.
    pub async fn presence_subscribe(&self, user_ids: &[Id]) -> Result<()> {
        self.fire(ClientFrame::PresenceSubscribe { user_ids: user_ids.iter().map(Id::to_string).collect() }).await
    }

    pub async fn presence_unsubscribe(&self, user_ids: &[Id]) -> Result<()> {
        self.fire(ClientFrame::PresenceUnsubscribe { user_ids: user_ids.iter().map(Id::to_string).collect() }).await
    }

    /// Sends any text frame as is (dropped while disconnected). Replies arrive as events.
    pub async fn send_raw(&self, text: impl Into<String>) -> Result<()> {
        self.cmds.send(Command::Raw(text.into())).await.map_err(|_| ClientError::Closed)
    }

    /// Closes with 1000 and stops the task; the event stream ends after `Disconnected`.
    /// Closing a connection that has already ended is not an error.
    pub async fn close(&self) -> Result<()> {
        match self.request(|done| Command::Close { done }).await {
            Err(ClientError::Closed) => Ok(()),
            other => other,
        }
    }

    async fn fire(&self, frame: ClientFrame) -> Result<()> {
        self.cmds.send(Command::Frame(frame)).await.map_err(|_| ClientError::Closed)
    }

    /// One bound covers both queueing the command and waiting for its answer. A request given
    /// up here is dropped by the task the next time it looks (its reply channel is closed).
    async fn request<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let wait = async {
            self.cmds.send(make(tx)).await.map_err(|_| ClientError::Closed)?;
            rx.await.map_err(|_| ClientError::Closed)?
        };
        timeout(self.timeout, wait).await.map_err(|_| ClientError::Timeout)?
    }
}

/// A TCP connection to a `ws://host:port/...` URL from the local address `ip`.
async fn connect_from(url: &str, ip: std::net::IpAddr) -> Result<TcpStream> {
    let invalid = || ClientError::Connect {
        what: format!("cannot connect from {ip} to {url}"),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "needs ws://host:port"),
    };
    let io = |what: String| move |source| ClientError::Connect { what, source };
    let rest = url.strip_prefix("ws://").ok_or_else(invalid)?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let remote = tokio::net::lookup_host(authority)
        .await
        .map_err(io(authority.to_owned()))?
        .find(|a| a.is_ipv4() == ip.is_ipv4())
        .ok_or_else(invalid)?;
    let socket = if ip.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .map_err(io("socket".into()))?;
    socket.bind(std::net::SocketAddr::new(ip, 0)).map_err(io(format!("bind {ip}")))?;
    let stream = socket.connect(remote).await.map_err(io(format!("connect {remote}")))?;
    stream.set_nodelay(true).map_err(io("set TCP_NODELAY".into()))?;
    Ok(stream)
}

/// Opens a socket, sends `auth` first and reads up to `ready`.
async fn open(url: &str, token: &str, local: Option<std::net::IpAddr>) -> Result<(Ws, Ready)> {
    // A 4 KiB read buffer instead of tungstenite's 128 KiB (which it also zeroes on every read):
    // frames are small, and a process holding thousands of sessions (the load generator) would
    // otherwise spend gigabytes and a quarter of its CPU on buffers. No Nagle delay either:
    // every frame is latency-sensitive.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) = match local {
        None => connect_async_with_config(url, Some(config), true).await?,
        Some(ip) => {
            let stream = connect_from(url, ip).await?;
            tokio_tungstenite::client_async_with_config(url, MaybeTlsStream::Plain(stream), Some(config)).await?
        }
    };
    let auth = encode(&ClientFrame::Auth { token: token.into() }, None)?;
    ws.send(WsMessage::text(auth)).await?;
    while let Some(msg) = ws.next().await {
        match msg? {
            WsMessage::Text(text) => {
                let head: FrameHead = serde_json::from_str(&text)?;
                match &*head.ty {
                    "ready" => return Ok((ws, serde_json::from_str(&text)?)),
                    "error" => {
                        return Err(ClientError::from_frame(serde_json::from_str(&text)?));
                    }
                    _ => debug!(ty = %head.ty, "ignoring frame before ready"),
                }
            }
            WsMessage::Close(Some(f)) if u16::from(f.code) == close::UNAUTHORIZED => {
                return Err(ClientError::Api {
                    status: 0,
                    code: ErrorCode::Unauthorized,
                    message: f.reason.to_string(),
                    retry_after_ms: None,
                    device_epoch: None,
                });
            }
            WsMessage::Close(_) => return Err(ClientError::Closed),
            _ => {}
        }
    }
    Err(ClientError::Closed)
}

/// Serializes a client frame and adds `ref` to its object (the enum has no place for it).
pub(crate) fn encode(frame: &ClientFrame, r#ref: Option<&str>) -> Result<String> {
    let mut value = serde_json::to_value(frame)?;
    if let (Some(r), Some(obj)) = (r#ref, value.as_object_mut()) {
        obj.insert("ref".into(), Value::String(r.into()));
    }
    Ok(value.to_string())
}

/// A random delay in `[min, min(max, min·2^attempt)]`: exponential growth with full jitter over
/// the window, so a server restart is not met by every client at once.
pub(crate) fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let (lo, hi) = (nanos(min), nanos(max).max(nanos(min)));
    let cap = lo.saturating_mul(1u64.checked_shl(attempt.min(63)).unwrap_or(u64::MAX)).min(hi);
    Duration::from_nanos(rand::rng().random_range(lo..=cap))
}

/// The highest seq delivered to the app per conversation. The server sends each conversation
/// in seq order, so anything at or below it is a repeat (after a reconnect).
#[derive(Default, Debug)]
pub(crate) struct Dedupe {
    highest: HashMap<Id, i64>,
}

impl Dedupe {
    /// Whether the message is new; records it if so.
    pub(crate) fn accept(&mut self, conv: Id, seq: i64) -> bool {
        let top = self.highest.entry(conv).or_insert(0);
        if seq <= *top {
            return false;
        }
        *top = seq;
        true
    }

    pub(crate) fn highest(&self, conv: Id) -> Option<i64> {
        self.highest.get(&conv).copied()
    }
}

/// Why a session on one socket ended.
enum Exit {
    /// `close()` or every handle dropped: stop for good.
    Closed(Option<oneshot::Sender<Result<()>>>),
    Dropped {
        code: Option<u16>,
        reason: String,
    },
}

impl Exit {
    fn lost(e: impl std::fmt::Display) -> Exit {
        Exit::Dropped { code: None, reason: e.to_string() }
    }
}

struct PendingSend {
    /// The encoded frame, kept to resend verbatim (same `client_id`, same `ref`).
    text: String,
    reply: Reply,
}

/// Who waits for the answer of a pending send: a `send` (`sent`) or a `to_device`
/// (`to_device_sent`).
enum Reply {
    Sent(oneshot::Sender<Result<Sent>>),
    ToDevice(oneshot::Sender<Result<ToDeviceSent>>),
}

impl Reply {
    fn is_closed(&self) -> bool {
        match self {
            Reply::Sent(r) => r.is_closed(),
            Reply::ToDevice(r) => r.is_closed(),
        }
    }

    fn fail(self, e: ClientError) {
        match self {
            Reply::Sent(r) => drop(r.send(Err(e))),
            Reply::ToDevice(r) => drop(r.send(Err(e))),
        }
    }
}

/// The frame and its reply for a command that waits for an answer by `ref`, if it is one.
fn pending_frame(cmd: Command) -> std::result::Result<(ClientFrame, Reply), Command> {
    match cmd {
        Command::Send { frame, reply } => Ok((ClientFrame::Send(frame), Reply::Sent(reply))),
        Command::ToDevice { client_id, messages, reply } => {
            Ok((ClientFrame::ToDevice { client_id, messages }, Reply::ToDevice(reply)))
        }
        other => Err(other),
    }
}

struct Task {
    url: String,
    token: String,
    opts: ConnectOptions,
    events: mpsc::Sender<Event>,
    cmds: mpsc::Receiver<Command>,
    next_ref: u64,
    /// Sends without an answer yet, by `ref` number (so resends keep call order); they survive
    /// reconnects.
    sends: BTreeMap<u64, PendingSend>,
    /// Pings written to the current socket, by `ref`; they fail when it drops.
    pings: HashMap<u64, oneshot::Sender<Result<()>>>,
    /// Pings issued while disconnected, written after the next `ready`.
    queued_pings: Vec<oneshot::Sender<Result<()>>>,
    dedupe: Dedupe,
    /// Acks not yet written: highest seq per conversation.
    acks: HashMap<Id, i64>,
    presence: HashSet<Id>,
    /// The newest `to_device_ack` not yet written (kept while disconnected).
    to_device_ack: Option<String>,
    /// The highest numeric to-device id handed over, to drop repeats after a reconnect.
    to_device_seen: Option<u128>,
}

impl Task {
    async fn run(mut self, mut ws: Ws) {
        loop {
            match self.serve(&mut ws).await {
                Exit::Closed(done) => {
                    let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                    let _ = timeout(CLOSE_GRACE, async {
                        let _ = ws.close(Some(frame)).await;
                        while ws.next().await.is_some() {}
                    })
                    .await;
                    self.emit(Event::Disconnected { code: Some(1000), reason: "closed by client".into() }).await;
                    if let Some(done) = done {
                        let _ = done.send(Ok(()));
                    }
                    return;
                }
                Exit::Dropped { code, reason } => {
                    debug!(?code, %reason, "connection dropped");
                    // A barrier is only meaningful on the socket it was sent on.
                    self.pings.clear();
                    self.emit(Event::Disconnected { code, reason }).await;
                    let terminal = matches!(code, Some(close::UNAUTHORIZED | close::DEVICE_REVOKED));
                    if terminal || !self.opts.reconnect {
                        return;
                    }
                    match self.reconnect().await {
                        Some(new) => ws = new,
                        None => return,
                    }
                    self.emit(Event::Reconnected).await;
                }
            }
        }
    }

    /// Retries with backoff until a socket is ready, still taking commands meanwhile so that
    /// callers queue up instead of blocking. `None`: stop for good.
    async fn reconnect(&mut self) -> Option<Ws> {
        for attempt in 0u32.. {
            let sleep = tokio::time::sleep(backoff(attempt, self.opts.backoff_min, self.opts.backoff_max));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    cmd = self.cmds.recv() => match cmd {
                        None => return None,
                        Some(Command::Close { done }) => {
                            let _ = done.send(Ok(()));
                            return None;
                        }
                        Some(cmd) => self.offline(cmd),
                    },
                }
            }
            // Every other attempt moves on to the next node (when there are others): a node
            // that is only restarting gets a second chance, a dead one costs one attempt.
            let servers = 1 + self.opts.other_servers.len();
            let pick = (attempt as usize).div_ceil(2) % servers;
            let url = if pick == 0 { self.url.clone() } else { ws_url(&self.opts.other_servers[pick - 1]) };
            match timeout(self.opts.request_timeout, open(&url, &self.token, self.opts.local_addr)).await {
                Ok(Ok((ws, _ready))) => return Some(ws),
                Ok(Err(e)) if e.code() == Some(ErrorCode::Unauthorized) => {
                    // The token was revoked while we were away; retrying cannot help.
                    let reason = e.to_string();
                    self.emit(Event::Disconnected { code: Some(close::UNAUTHORIZED), reason }).await;
                    return None;
                }
                Ok(Err(e)) => debug!(attempt, error = %e, "reconnect failed"),
                Err(_) => debug!(attempt, "reconnect timed out"),
            }
        }
        None
    }

    /// Holds a command while there is no socket.
    fn offline(&mut self, cmd: Command) {
        let cmd = match pending_frame(cmd) {
            Ok((frame, reply)) => {
                let r = self.new_ref();
                match encode(&frame, Some(&ref_str(r))) {
                    Ok(text) => {
                        self.sends.insert(r, PendingSend { text, reply });
                    }
                    Err(e) => reply.fail(e),
                }
                return;
            }
            Err(cmd) => cmd,
        };
        match cmd {
            Command::Send { .. } | Command::ToDevice { .. } => {}
            Command::Ping { reply } => self.queued_pings.push(reply),
            Command::Frame(frame) => {
                self.track_presence(&frame);
                // An ack is kept (the cursor should still advance); read and typing are
                // moments that have passed.
                match frame {
                    ClientFrame::Ack { conversation_id, seq } => self.note_ack(conversation_id, seq),
                    ClientFrame::ToDeviceAck { up_to_id } => self.to_device_ack = Some(up_to_id),
                    _ => {}
                }
            }
            Command::Raw(_) | Command::Close { .. } => {}
        }
    }

    async fn serve(&mut self, ws: &mut Ws) -> Exit {
        if let Err(e) = self.resume(ws).await {
            return Exit::lost(e);
        }
        loop {
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    None => return Exit::Closed(None),
                    Some(Command::Close { done }) => return Exit::Closed(Some(done)),
                    Some(cmd) => {
                        if let Err(e) = self.online(cmd, ws).await {
                            return Exit::lost(e);
                        }
                    }
                },
                msg = ws.next() => {
                    let mut msg = msg;
                    let mut budget = DRAIN_BUDGET;
                    loop {
                        if let Some(exit) = self.inbound(ws, msg).await {
                            return exit;
                        }
                        budget -= 1;
                        if budget == 0 {
                            break;
                        }
                        // Keep going while frames are already buffered; acks wait until then.
                        match ws.next().now_or_never() {
                            Some(next) => msg = next,
                            None => break,
                        }
                    }
                    if let Err(e) = self.flush_acks(ws).await {
                        return Exit::lost(e);
                    }
                }
            }
        }
    }

    /// Handles one item from the socket; `Some` when the socket is finished.
    async fn inbound(&mut self, ws: &mut Ws, msg: Option<std::result::Result<WsMessage, WsError>>) -> Option<Exit> {
        match msg {
            None => Some(Exit::lost("connection lost")),
            Some(Err(e)) => Some(Exit::lost(e)),
            Some(Ok(WsMessage::Close(f))) => {
                // Let tungstenite answer the close before we drop the socket.
                let _ = timeout(CLOSE_GRACE, async { while ws.next().await.is_some() {} }).await;
                let (code, reason) = match f {
                    Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                    None => (None, "closed by server".into()),
                };
                Some(Exit::Dropped { code, reason })
            }
            Some(Ok(WsMessage::Text(text))) => {
                self.dispatch(&text).await;
                None
            }
            // tungstenite answers pings itself as long as we keep reading.
            Some(Ok(_)) => None,
        }
    }

    /// After `ready`: replays what the last socket left unfinished.
    async fn resume(&mut self, ws: &mut Ws) -> Result<()> {
        self.sends.retain(|_, p| !p.reply.is_closed());
        for p in self.sends.values() {
            ws.feed(WsMessage::text(p.text.clone())).await?;
        }
        if !self.presence.is_empty() {
            let user_ids = self.presence.iter().map(Id::to_string).collect();
            let text = encode(&ClientFrame::PresenceSubscribe { user_ids }, None)?;
            ws.feed(WsMessage::text(text)).await?;
        }
        if let Some(up_to_id) = self.to_device_ack.take() {
            ws.feed(WsMessage::text(encode(&ClientFrame::ToDeviceAck { up_to_id }, None)?)).await?;
        }
        for reply in std::mem::take(&mut self.queued_pings) {
            let r = self.new_ref();
            ws.feed(WsMessage::text(encode(&ClientFrame::Ping, Some(&ref_str(r)))?)).await?;
            self.pings.insert(r, reply);
        }
        ws.flush().await?;
        self.flush_acks(ws).await
    }

    async fn online(&mut self, cmd: Command, ws: &mut Ws) -> Result<()> {
        let cmd = match pending_frame(cmd) {
            Ok((frame, reply)) => {
                let r = self.new_ref();
                let text = match encode(&frame, Some(&ref_str(r))) {
                    Ok(text) => text,
                    Err(e) => {
                        reply.fail(e);
                        return Ok(());
                    }
                };
                // Tracked before writing, so a failed write is retried after reconnecting.
                self.sends.insert(r, PendingSend { text: text.clone(), reply });
                ws.send(WsMessage::text(text)).await?;
                return Ok(());
            }
            Err(cmd) => cmd,
        };
        let text = match cmd {
            Command::Send { .. } | Command::ToDevice { .. } => return Ok(()),
            Command::Ping { reply } => {
                let r = self.new_ref();
                self.pings.insert(r, reply);
                encode(&ClientFrame::Ping, Some(&ref_str(r)))?
            }
            Command::Frame(frame) => {
                self.track_presence(&frame);
                if matches!(frame, ClientFrame::ToDeviceAck { .. }) {
                    self.to_device_ack = None;
                }
                encode(&frame, None)?
            }
            Command::Raw(text) => text,
            Command::Close { .. } => return Ok(()),
        };
        ws.send(WsMessage::text(text)).await?;
        Ok(())
    }

    async fn dispatch(&mut self, text: &str) {
        let head: FrameHead = match serde_json::from_str(text) {
            Ok(h) => h,
            Err(e) => return warn!(error = %e, "undecodable server frame"),
        };
        // Refs we did not make (e.g. from `send_raw`) match nothing and surface as events.
        let r#ref = head.r#ref.as_deref().and_then(ref_num);
        match &*head.ty {
            "message" => {
                let Some(m) = parse::<Message>(text) else {
                    return;
                };
                let (conv, seq) = (m.conversation_id, m.seq);
                if self.dedupe.accept(conv, seq) {
                    self.emit(Event::Message(m)).await;
                } else {
                    debug!(%conv, seq, "dropping repeated message");
                }
                // A repeat means the server did not see our ack: send it again.
                if self.opts.auto_ack
                    && let Some(top) = self.dedupe.highest(conv)
                {
                    self.note_ack(conv, top);
                }
            }
            "sent" => {
                let Some(sent) = parse::<Sent>(text) else {
                    return;
                };
                match r#ref.and_then(|r| self.sends.remove(&r)) {
                    Some(PendingSend { reply: Reply::Sent(reply), .. }) => drop(reply.send(Ok(sent))),
                    Some(PendingSend { reply: Reply::ToDevice(reply), .. }) => {
                        drop(reply.send(Err(ClientError::Decode("`sent` answered a to_device".into()))))
                    }
                    None => debug!("sent for a request no longer waiting"),
                }
            }
            "to_device_sent" => {
                let Some(done) = parse::<ToDeviceSent>(text) else {
                    return;
                };
                match r#ref.and_then(|r| self.sends.remove(&r)) {
                    Some(PendingSend { reply: Reply::ToDevice(reply), .. }) => drop(reply.send(Ok(done))),
                    Some(PendingSend { reply: Reply::Sent(reply), .. }) => {
                        drop(reply.send(Err(ClientError::Decode("`to_device_sent` answered a send".into()))))
                    }
                    None => debug!("to_device_sent for a request no longer waiting"),
                }
            }
            "to_device" => {
                let Some(m) = parse::<ToDeviceIn>(text) else {
                    return;
                };
                // Ids grow per device: one at or below the last handed over is a repeat.
                if let Ok(n) = m.id.parse::<u128>() {
                    if self.to_device_seen.is_some_and(|top| n <= top) {
                        return debug!(id = %m.id, "dropping repeated to_device");
                    }
                    self.to_device_seen = Some(n);
                }
                self.emit(Event::ToDevice(m)).await;
            }
            "device_list_changed" => self.emit_parsed(text, Event::DeviceListChanged).await,
            "keys_low" => self.emit_parsed(text, Event::KeysLow).await,
            "pong" => {
                if let Some(reply) = r#ref.and_then(|r| self.pings.remove(&r)) {
                    let _ = reply.send(Ok(()));
                }
            }
            "error" => {
                let Some(e) = parse::<ErrorFrame>(text) else {
                    return;
                };
                if let Some(p) = r#ref.and_then(|r| self.sends.remove(&r)) {
                    p.reply.fail(ClientError::from_frame(e));
                } else if let Some(reply) = r#ref.and_then(|r| self.pings.remove(&r)) {
                    let _ = reply.send(Err(ClientError::from_frame(e)));
                } else {
                    self.emit(Event::Error(e)).await;
                }
            }
            "synced" => self.emit(Event::Synced).await,
            "receipt" => self.emit_parsed(text, Event::Receipt).await,
            "typing" => self.emit_parsed(text, Event::Typing).await,
            "presence" => self.emit_parsed(text, Event::Presence).await,
            "conversation" => {
                self.emit_parsed(text, |c: Conversation| Event::Conversation(Box::new(c))).await;
            }
            other => debug!(ty = other, "ignoring unknown frame type"),
        }
    }

    async fn emit_parsed<T: DeserializeOwned>(&self, text: &str, wrap: impl FnOnce(T) -> Event) {
        if let Some(v) = parse(text) {
            self.emit(wrap(v)).await;
        }
    }

    /// Waits for room: a slow application slows reading, and the server's own flow control
    /// (close 4009, then a resync) takes over from there.
    async fn emit(&self, event: Event) {
        // The application may have dropped the receiver and use requests only.
        let _ = self.events.send(event).await;
    }

    async fn flush_acks(&mut self, ws: &mut Ws) -> Result<()> {
        if self.acks.is_empty() {
            return Ok(());
        }
        for (conv, seq) in std::mem::take(&mut self.acks) {
            let text = encode(&ClientFrame::Ack { conversation_id: conv, seq }, None)?;
            ws.feed(WsMessage::text(text)).await?;
        }
        ws.flush().await?;
        Ok(())
    }

    fn note_ack(&mut self, conv: Id, seq: i64) {
        let e = self.acks.entry(conv).or_insert(seq);
        *e = (*e).max(seq);
    }

    fn track_presence(&mut self, frame: &ClientFrame) {
        match frame {
            ClientFrame::PresenceSubscribe { user_ids } => self.presence.extend(user_ids.iter().map(|u| Id::parse(u))),
            ClientFrame::PresenceUnsubscribe { user_ids } => {
                for u in user_ids {
                    self.presence.remove(&Id::parse(u));
                }
            }
            _ => {}
        }
    }

    fn new_ref(&mut self) -> u64 {
        self.next_ref += 1;
        self.next_ref
    }
}

fn ref_str(n: u64) -> String {
    format!("r{n}")
}

fn ref_num(r: &str) -> Option<u64> {
    r.strip_prefix('r')?.parse().ok()
}

fn parse<T: DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_str(text).map_err(|e| warn!(error = %e, "undecodable server frame")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_drops_repeats_per_conversation() {
        let mut d = Dedupe::default();
        assert!(d.accept(Id(1), 1));
        assert!(d.accept(Id(1), 2));
        assert!(!d.accept(Id(1), 2));
        assert!(!d.accept(Id(1), 1));
        assert!(d.accept(Id(2), 1));
        assert!(d.accept(Id(1), 5));
        assert_eq!(d.highest(Id(1)), Some(5));
        assert_eq!(d.highest(Id(3)), None);
    }

    #[test]
    fn backoff_stays_in_bounds() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(10));
        for attempt in [0, 1, 3, 7, 20, 63, 64, u32::MAX] {
            for _ in 0..50 {
                let d = backoff(attempt, min, max);
                assert!(d >= min && d <= max, "{attempt}: {d:?}");
            }
        }
        assert_eq!(backoff(0, min, min), min);
        assert!(backoff(1, min, max) <= Duration::from_millis(200));
        // A max below min is treated as min rather than panicking.
        assert_eq!(backoff(5, min, Duration::ZERO), min);
    }

    #[test]
    fn encode_adds_ref() {
        let ack = ClientFrame::Ack { conversation_id: Id(7), seq: 3 };
        let v: Value = serde_json::from_str(&encode(&ack, Some("r1")).unwrap()).unwrap();
        assert_eq!(v, json!({"type": "ack", "conversation_id": "7", "seq": 3, "ref": "r1"}));
        assert_eq!(encode(&ClientFrame::Ping, Some("r2")).unwrap(), r#"{"ref":"r2","type":"ping"}"#);
        assert_eq!(ref_num(&ref_str(42)), Some(42));
        assert_eq!(ref_num("zz"), None);
        let auth = encode(&ClientFrame::Auth { token: "t".into() }, None).unwrap();
        assert_eq!(auth, r#"{"token":"t","type":"auth"}"#);
    }
}

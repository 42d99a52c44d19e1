//! One WebSocket connection: a single task that owns the socket and `select!`s over the
//! shutdown token, its kick channel, replies that became ready, its outbound queue, incoming
//! frames and a keepalive tick.
//!
//! Frames from the client are handled in order: each one that needs the store becomes a future
//! in `pending`, a `FuturesOrdered`, which yields replies in the order the frames came even
//! though the store works on several at once (sends are pipelined into group commit). A `pong`
//! is queued behind earlier replies, so it proves every earlier frame has taken effect.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use parley_core::ids::{ConversationId, DeviceId, UserId};
use parley_core::limits::MAX_FRAME_BYTES;
use parley_proto::frames::{self, ClientFrame, Pong, Ready, Sent, ServerFrame, Synced, Typing, close};
use parley_proto::{ErrorCode, Id};
use parley_router::{ConnHandle, Kick, Outbound};
use tokio::sync::mpsc;

use super::sync::{self, Seen};
use crate::auth;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::presence::Watcher;
use crate::service;
use crate::state::App;

/// What a frame is answered with, in order: usually zero or one frame.
type Reply = Pin<Box<dyn Future<Output = Vec<String>> + Send>>;

/// Queued frames written per flush at most, so one busy connection yields to others.
const WRITE_BATCH: usize = 256;

/// Why the loop ended and how to close.
enum End {
    Close(u16, &'static str),
    /// The peer went away or the socket failed: nothing to send.
    Gone,
}

struct Conn {
    app: Arc<App>,
    socket: WebSocket,
    user: UserId,
    device: DeviceId,
    seen: Seen,
    last_heard: Instant,
    /// This connection's registration (for presence subscriptions).
    handle: ConnHandle,
    /// Conversations this connection is typing in, with when `active: true` was last forwarded.
    typing: HashMap<ConversationId, Instant>,
}

pub async fn serve(app: Arc<App>, mut socket: WebSocket) {
    let device = match authenticate(&app, &mut socket).await {
        Ok(d) => d,
        Err(End::Close(code, reason)) => return close(&mut socket, code, reason).await,
        Err(End::Gone) => return,
    };
    let (frames_tx, frames_rx) = mpsc::channel(app.config.outbound_queue.max(1));
    let (kicks_tx, kicks_rx) = mpsc::channel(2);
    let conn_id = app.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let handle =
        ConnHandle { id: conn_id, user_id: device.user_id, device_id: device.id, frames: frames_tx, kicks: kicks_tx };
    // Reachable from every node before the backlog is read (see `sync`).
    app.router.register(handle.clone()).await;
    app.presence.connected(device.user_id);
    Metrics::inc(&app.metrics.connections_opened);
    let mut conn = Conn {
        app: app.clone(),
        socket,
        user: device.user_id,
        device: device.id,
        seen: Seen::new(),
        last_heard: Instant::now(),
        handle,
        typing: HashMap::new(),
    };
    let end = conn.run(frames_rx, kicks_rx).await;
    app.router.unregister(conn.user, conn_id);
    app.presence.connection_closed(conn_id);
    app.presence.disconnected(conn.user);
    // Whoever saw this connection typing sees it stop.
    for conv in std::mem::take(&mut conn.typing).into_keys() {
        forward_typing(&app, conn.user, conv, false).await;
    }
    if let End::Close(code, reason) = end {
        close(&mut conn.socket, code, reason).await;
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.send(WsMessage::Close(Some(frame)))).await;
}

/// Waits for the `auth` frame and resolves its token to a device.
async fn authenticate(app: &App, socket: &mut WebSocket) -> Result<parley_core::model::Device, End> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(app.config.auth_timeout_ms);
    let text = loop {
        match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => return Err(End::Close(close::AUTH_TIMEOUT, "auth timeout")),
            Ok(None | Some(Err(_)) | Some(Ok(WsMessage::Close(_)))) => return Err(End::Gone),
            Ok(Some(Ok(WsMessage::Text(t)))) => break t,
            Ok(Some(Ok(WsMessage::Binary(_)))) => break Utf8Bytes::from_static("{}"),
            Ok(Some(Ok(_))) => continue,
        }
    };
    let (token, r#ref) = match frames::decode_client_frame(&text) {
        Ok((ClientFrame::Auth { token }, r)) => (token, r),
        Ok((_, r)) | Err(frames::DecodeError { r#ref: r, .. }) => {
            let msg = ApiError::new(ErrorCode::Unauthorized, "the first frame must be auth").to_frame(r);
            let _ = socket.send(WsMessage::Text(msg.into())).await;
            return Err(End::Close(close::UNAUTHORIZED, "unauthorized"));
        }
    };
    match auth::device_for_token(app, &token).await {
        Ok(Some(device)) => {
            let ready = ServerFrame::Ready(Ready {
                user_id: Id(device.user_id),
                device_id: Id(device.id),
                server_time: parley_core::now_ms(),
            })
            .to_json();
            socket.send(WsMessage::Text(ready.into())).await.map_err(|_| End::Gone)?;
            Ok(device)
        }
        Ok(None) => {
            let _ = socket.send(WsMessage::Text(ApiError::unauthorized().to_frame(r#ref).into())).await;
            Err(End::Close(close::UNAUTHORIZED, "unauthorized"))
        }
        Err(e) => {
            let _ = socket.send(WsMessage::Text(e.to_frame(r#ref).into())).await;
            Err(End::Close(close::GOING_AWAY, "try again"))
        }
    }
}

impl Conn {
    async fn run(&mut self, mut frames: mpsc::Receiver<Outbound>, mut kicks: mpsc::Receiver<Kick>) -> End {
        let shutdown = self.app.shutdown.clone();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return End::Close(close::GOING_AWAY, "server going away"),
            r = self.replay() => if let Err(end) = r { return end },
        }
        let mut pending: FuturesOrdered<Reply> = FuturesOrdered::new();
        let ping_every = Duration::from_millis(self.app.config.ping_interval_ms.max(10));
        let idle_limit = Duration::from_millis(self.app.config.idle_timeout_ms.max(20));
        let mut tick = tokio::time::interval(ping_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let max_pipeline = self.app.config.max_pipeline.max(1);
        loop {
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return End::Close(close::GOING_AWAY, "server going away"),
                Some(kick) = kicks.recv() => match kick {
                    Kick::Resync => Step::Resync,
                    other => return self.kicked(other),
                },
                Some(reply) = pending.next(), if !pending.is_empty() => Step::Reply(reply),
                Some(out) = frames.recv() => Step::Out(out),
                incoming = self.socket.recv(), if pending.len() < max_pipeline => Step::In(incoming),
                _ = tick.tick() => Step::Tick,
            };
            let result = match step {
                Step::Reply(reply) => self.write_replies(reply, &mut pending).await,
                Step::Out(out) => self.write_outbound(out, &mut frames).await,
                Step::In(incoming) => self.incoming(incoming, &mut pending).await,
                Step::Tick => self.keepalive(idle_limit, ping_every).await,
                Step::Resync => self.resync().await,
            };
            match result {
                Ok(()) => {}
                Err(end) => {
                    // Answer what was already accepted before closing, where the socket allows.
                    if matches!(end, End::Close(..)) {
                        while let Some(Some(replies)) = pending.next().now_or_never() {
                            for text in replies {
                                let _ = self.socket.feed(WsMessage::Text(text.into())).await;
                            }
                        }
                        let _ = self.socket.flush().await;
                    }
                    return end;
                }
            }
        }
    }

    fn kicked(&self, kick: Kick) -> End {
        match kick {
            Kick::TooSlow => {
                Metrics::inc(&self.app.metrics.too_slow_closes);
                End::Close(close::TOO_SLOW, "too slow: reconnect and resync")
            }
            Kick::Revoked => End::Close(close::DEVICE_REVOKED, "device revoked"),
            // Handled in place (see `resync`); closing is the fallback a client also recovers from.
            Kick::Resync => End::Close(close::GOING_AWAY, "reconnect and resync"),
        }
    }

    /// Frames routed to this node may have been lost (its link to the other nodes broke): write
    /// what the log has past this connection's high-water marks, as a reconnect's replay would,
    /// without closing. Live frames queued meanwhile are then dropped as repeats.
    async fn resync(&mut self) -> Result<(), End> {
        let plan = sync::plan(&self.app, self.device, self.user)
            .await
            .map_err(|_| End::Close(close::GOING_AWAY, "sync failed"))?;
        for (conv, cursor, upto) in plan {
            let mut after = self.seen.get(&conv).copied().unwrap_or(cursor).max(cursor);
            while after < upto {
                let (texts, last, full) = sync::page(&self.app, self.device, conv, after, upto)
                    .await
                    .map_err(|_| End::Close(close::GOING_AWAY, "sync failed"))?;
                for text in texts {
                    Metrics::inc(&self.app.metrics.replayed);
                    self.feed(text.into()).await?;
                }
                after = last;
                if !full {
                    break;
                }
            }
            self.seen.insert(conv, after);
        }
        self.socket.flush().await.map_err(|_| End::Gone)
    }

    async fn replay(&mut self) -> Result<(), End> {
        let plan = sync::plan(&self.app, self.device, self.user)
            .await
            .map_err(|_| End::Close(close::GOING_AWAY, "sync failed"))?;
        for (conv, mut after, upto) in plan {
            while after < upto {
                let (texts, last, full) = sync::page(&self.app, self.device, conv, after, upto)
                    .await
                    .map_err(|_| End::Close(close::GOING_AWAY, "sync failed"))?;
                for text in texts {
                    Metrics::inc(&self.app.metrics.replayed);
                    self.feed(text.into()).await?;
                }
                self.socket.flush().await.map_err(|_| End::Gone)?;
                after = last;
                if !full {
                    break;
                }
            }
            // Every conversation gets a high-water mark, up to date or not, so a live entry that
            // arrives ahead of an earlier one is seen as a gap and filled, never as the start.
            self.seen.insert(conv, after);
        }
        self.feed(ServerFrame::Synced(Synced {}).to_json().into()).await?;
        self.socket.flush().await.map_err(|_| End::Gone)
    }

    async fn feed(&mut self, text: Utf8Bytes) -> Result<(), End> {
        self.socket.feed(WsMessage::Text(text)).await.map_err(|_| End::Gone)
    }

    async fn write_replies(&mut self, first: Vec<String>, pending: &mut FuturesOrdered<Reply>) -> Result<(), End> {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(replies) = next {
            for text in replies {
                self.feed(text.into()).await?;
            }
            n += 1;
            next = if n < WRITE_BATCH { pending.next().now_or_never().flatten() } else { None };
        }
        self.socket.flush().await.map_err(|_| End::Gone)
    }

    async fn write_outbound(&mut self, first: Outbound, frames: &mut mpsc::Receiver<Outbound>) -> Result<(), End> {
        self.app.metrics.queue_depth.observe(frames.len() as u64 + 1);
        self.outbound(first).await?;
        for _ in 1..WRITE_BATCH {
            match frames.try_recv() {
                Ok(out) => self.outbound(out).await?,
                Err(_) => break,
            }
        }
        self.socket.flush().await.map_err(|_| End::Gone)
    }

    /// Writes one routed frame, keeping each conversation gap-free and free of repeats.
    async fn outbound(&mut self, out: Outbound) -> Result<(), End> {
        if let Some(p) = out.position {
            let known = match self.seen.get(&p.conversation_id) {
                Some(&last) => Some(last),
                // Joined after this connection synced: its stream starts at the join entry.
                None => self.app.members.window(p.conversation_id, self.user).await.map(|w| w.joined_seq - 1),
            };
            if let Some(last) = known {
                if p.seq <= last {
                    return Ok(());
                }
                if p.seq > last + 1 {
                    self.fill_gap(p.conversation_id, last, p.seq - 1).await?;
                }
            }
            self.seen.insert(p.conversation_id, p.seq);
            if p.sender_device_id == Some(self.device) {
                return Ok(());
            }
        }
        Metrics::inc(&self.app.metrics.deliveries);
        // Routed frames are built from `String`s, so they are valid UTF-8.
        let text = Utf8Bytes::try_from(out.json).map_err(|_| End::Close(close::GOING_AWAY, "internal error"))?;
        self.feed(text).await
    }

    /// Routing reordered or dropped something (possible across nodes): read the gap from the log,
    /// within this user's membership window (a re-added member never sees the time they were out).
    async fn fill_gap(&mut self, conv: parley_core::ids::ConversationId, after: i64, upto: i64) -> Result<(), End> {
        let Some(w) = self.app.members.window(conv, self.user).await else {
            return Ok(());
        };
        let mut after = after.max(w.joined_seq - 1);
        let upto = w.left_seq.map_or(upto, |l| upto.min(l));
        while after < upto {
            let (texts, last, _) = sync::page(&self.app, self.device, conv, after, upto)
                .await
                .map_err(|_| End::Close(close::GOING_AWAY, "sync failed"))?;
            for text in texts {
                self.feed(text.into()).await?;
            }
            if last == after {
                break;
            }
            after = last;
        }
        Ok(())
    }

    async fn keepalive(&mut self, idle_limit: Duration, ping_every: Duration) -> Result<(), End> {
        let quiet = self.last_heard.elapsed();
        if quiet >= idle_limit {
            return Err(End::Close(close::GOING_AWAY, "no answer to pings"));
        }
        if quiet >= ping_every {
            self.socket.send(WsMessage::Ping(Default::default())).await.map_err(|_| End::Gone)?;
        }
        Ok(())
    }

    async fn incoming(
        &mut self,
        incoming: Option<Result<WsMessage, axum::Error>>,
        pending: &mut FuturesOrdered<Reply>,
    ) -> Result<(), End> {
        let msg = match incoming {
            None => return Err(End::Gone),
            Some(Err(e)) => {
                // tungstenite refuses messages past max_message_size: say so with 1009.
                let text = e.to_string();
                if text.contains("too long") || text.contains("Space limit") || text.contains("size") {
                    return Err(End::Close(close::TOO_BIG, "frame too large"));
                }
                return Err(End::Gone);
            }
            Some(Ok(m)) => m,
        };
        self.last_heard = Instant::now();
        let text = match msg {
            WsMessage::Text(t) => t,
            WsMessage::Close(_) => return Err(End::Gone),
            WsMessage::Ping(_) | WsMessage::Pong(_) => return Ok(()),
            WsMessage::Binary(_) => {
                self.reply_now(pending, ApiError::new(ErrorCode::InvalidFrame, "frames are JSON text"), None);
                return Ok(());
            }
        };
        if text.len() > MAX_FRAME_BYTES {
            let e = ApiError::new(ErrorCode::PayloadTooLarge, format!("frames are at most {MAX_FRAME_BYTES} bytes"));
            self.reply_now(pending, e, None);
            return Ok(());
        }
        let (frame, r#ref) = match frames::decode_client_frame(&text) {
            Ok(ok) => ok,
            Err(e) => {
                self.reply_now(pending, ApiError::new(e.code, e.message), e.r#ref);
                return Ok(());
            }
        };
        self.dispatch(frame, r#ref, pending).await;
        Ok(())
    }

    /// `typing`: forwarded to the other members who are online, never stored. `active: true` is
    /// thinned to one per `typing_interval_ms` per conversation (receivers keep showing it for
    /// 6 s); `active: false` goes out only if `active: true` did.
    async fn typing(
        &mut self,
        conv: ConversationId,
        active: bool,
        r#ref: Option<String>,
        pending: &mut FuturesOrdered<Reply>,
    ) {
        let member = self.app.members.get(conv).await.is_some_and(|m| m.is_current(self.user));
        if !member {
            let e = ApiError::new(ErrorCode::NotMember, "not a member of this conversation");
            self.reply_now(pending, e, r#ref);
            return;
        }
        let now = Instant::now();
        let interval = Duration::from_millis(self.app.config.typing_interval_ms);
        let forward = if active {
            match self.typing.get(&conv) {
                Some(at) if now.duration_since(*at) < interval => false,
                _ => {
                    self.typing.insert(conv, now);
                    true
                }
            }
        } else {
            self.typing.remove(&conv).is_some()
        };
        if forward {
            forward_typing(&self.app, self.user, conv, active).await;
        }
    }

    /// Answers with an error frame, in order with the other replies.
    fn reply_now(&self, pending: &mut FuturesOrdered<Reply>, e: ApiError, r#ref: Option<String>) {
        self.app.metrics.error(e.code);
        pending.push_back(Box::pin(std::future::ready(vec![e.to_frame(r#ref)])));
    }

    /// An `ack` or `read` has no reply of its own; its place in `pending` only holds back later
    /// replies (a `pong`) until it has taken effect, and carries its error if it fails.
    fn pointer_reply(
        &self,
        pending: &mut FuturesOrdered<Reply>,
        queued: parley_store::Result<parley_store::Ticket<()>>,
        r#ref: Option<String>,
    ) {
        match queued {
            Ok(ticket) => {
                let app = self.app.clone();
                pending.push_back(Box::pin(async move {
                    match ticket.wait().await {
                        Ok(()) => Vec::new(),
                        Err(e) => error_reply(&app, e.into(), r#ref),
                    }
                }))
            }
            Err(e) => self.reply_now(pending, e.into(), r#ref),
        }
    }

    async fn dispatch(&mut self, frame: ClientFrame, r#ref: Option<String>, pending: &mut FuturesOrdered<Reply>) {
        let app = self.app.clone();
        let (user, device) = (self.user, self.device);
        match frame {
            ClientFrame::Auth { .. } => {
                self.reply_now(pending, ApiError::bad_request("already authenticated"), r#ref);
            }
            ClientFrame::Ping => {
                pending.push_back(Box::pin(std::future::ready(vec![ServerFrame::Pong(Pong { r#ref }).to_json()])));
            }
            ClientFrame::Send(s) => {
                // Sending into a conversation ends typing there.
                if self.typing.remove(&s.conversation_id.0).is_some() {
                    forward_typing(&self.app, self.user, s.conversation_id.0, false).await;
                }
                // Queued here, in frame order, so pipelined sends keep their order in the log;
                // only the wait for durability is deferred into `pending`.
                match service::enqueue(&app, user, device, s).await {
                    Ok(ticket) => pending.push_back(Box::pin(async move {
                        match service::finish(&app, ticket).await {
                            Ok(o) => vec![
                                ServerFrame::Sent(Sent {
                                    r#ref,
                                    conversation_id: Id(o.message.conversation_id),
                                    client_id: o.message.client_id.unwrap_or_default(),
                                    message_id: Id(o.message.message_id),
                                    seq: o.message.seq,
                                    ts: o.message.ts,
                                })
                                .to_json(),
                            ],
                            Err(e) => error_reply(&app, e, r#ref),
                        }
                    })),
                    Err(e) => self.reply_now(pending, e, r#ref),
                }
            }
            // Pointer moves are queued here, in frame order like sends, so one that precedes a
            // send rides on that send's commit instead of waiting for a commit of its own.
            ClientFrame::Ack { conversation_id, seq } => {
                let queued = app.store.enqueue_ack(device, user, conversation_id.0, seq).await;
                self.pointer_reply(pending, queued, r#ref)
            }
            ClientFrame::Read { conversation_id, seq } => {
                let queued = app.store.enqueue_read(user, conversation_id.0, seq).await;
                self.pointer_reply(pending, queued, r#ref)
            }
            ClientFrame::Typing { conversation_id, active } => {
                self.typing(conversation_id.0, active, r#ref, pending).await
            }
            ClientFrame::PresenceSubscribe { user_ids } => {
                let watcher = Watcher {
                    conn_id: self.handle.id,
                    user_id: user,
                    frames: self.handle.frames.clone(),
                    kicks: self.handle.kicks.clone(),
                };
                pending.push_back(Box::pin(async move {
                    match app.presence.subscribe(watcher, &user_ids).await {
                        Ok(frames) => frames.into_iter().map(|f| ServerFrame::Presence(f).to_json()).collect(),
                        Err(e) => error_reply(&app, e, r#ref),
                    }
                }));
            }
            ClientFrame::PresenceUnsubscribe { user_ids } => {
                let ids: Vec<i64> = user_ids.iter().map(|i| Id::parse(i).0).collect();
                self.app.presence.unsubscribe(self.handle.id, &ids);
            }
        }
    }
}

/// Sends `user`'s typing state in `conv` to the other current members who are online.
async fn forward_typing(app: &App, user: UserId, conv: ConversationId, active: bool) {
    let Some(members) = app.members.get(conv).await else { return };
    let others: Vec<UserId> = members.current().filter(|&u| u != user).collect();
    let json = ServerFrame::Typing(Typing { conversation_id: Id(conv), user_id: Id(user), active }).to_json();
    app.router.deliver(&others, &Outbound { json: bytes::Bytes::from(json), position: None });
}

fn error_reply(app: &App, e: ApiError, r#ref: Option<String>) -> Vec<String> {
    app.metrics.error(e.code);
    vec![e.to_frame(r#ref)]
}

enum Step {
    Reply(Vec<String>),
    Out(Outbound),
    In(Option<Result<WsMessage, axum::Error>>),
    Tick,
    Resync,
}

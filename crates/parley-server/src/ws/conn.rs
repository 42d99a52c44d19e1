//! One WebSocket connection: a single task that owns the socket and `select!`s over the
//! shutdown token, its kick channel, replies that became ready, its outbound queue, incoming
//! frames and a keepalive tick; and [`Conn::dispatch`], the one `match` over client frames, which
//! hands each frame family to its own module (`auth`, `send`, `pointers`, `typing`, `presence`,
//! `sync`).
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
use parley_core::ids::{ConversationId, DeviceId, Seq, UserId};
use parley_core::limits::MAX_FRAME_BYTES;
use parley_proto::ErrorCode;
use parley_proto::frames::{self, ClientFrame, Pong, ServerFrame, close};
use parley_router::{ConnHandle, Kick, Outbound};
use tokio::sync::mpsc;

use super::sync::Seen;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::App;

/// What a frame is answered with, in order: usually zero or one frame.
pub(super) type Reply = Pin<Box<dyn Future<Output = Vec<String>> + Send>>;

/// Replies not yet written, in the order of the frames they answer.
pub(super) type Pending = FuturesOrdered<Reply>;

/// Queued frames written per flush at most, so one busy connection yields to others.
const WRITE_BATCH: usize = 256;

/// Why the loop ended and how to close.
pub(super) enum End {
    Close(u16, &'static str),
    /// The peer went away or the socket failed: nothing to send.
    Gone,
}

/// One authenticated connection's state, owned by its task.
pub(super) struct Conn {
    pub(super) app: Arc<App>,
    pub(super) socket: WebSocket,
    pub(super) user: UserId,
    pub(super) device: DeviceId,
    /// Per conversation, the highest seq written (or skipped as this device's own); see `sync`.
    pub(super) seen: Seen,
    /// When the client last sent anything, for the idle timeout.
    last_heard: Instant,
    /// This connection's registration (for presence subscriptions).
    pub(super) handle: ConnHandle,
    /// Conversations this connection is typing in, with when `active: true` was last forwarded.
    pub(super) typing: HashMap<ConversationId, Instant>,
    /// The highest to-device id written to this connection (see `to_device`).
    pub(super) to_device_seen: i64,
}

pub(super) async fn serve(app: Arc<App>, mut socket: WebSocket) {
    let device = match super::auth::authenticate(&app, &mut socket).await {
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
        to_device_seen: 0,
    };
    let end = conn.run(frames_rx, kicks_rx).await;
    app.router.unregister(conn.user, conn_id);
    app.presence.connection_closed(conn_id);
    app.presence.disconnected(conn.user);
    conn.stop_typing_everywhere().await;
    if let End::Close(code, reason) = end {
        close(&mut conn.socket, code, reason).await;
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.send(WsMessage::Close(Some(frame)))).await;
}

impl Conn {
    async fn run(&mut self, mut frames: mpsc::Receiver<Outbound>, mut kicks: mpsc::Receiver<Kick>) -> End {
        let shutdown = self.app.shutdown.clone();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return End::Close(close::GOING_AWAY, "server going away"),
            r = self.replay() => if let Err(end) = r { return end },
        }
        let mut pending = Pending::new();
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
            // Handled in place (see `sync`); closing is the fallback a client also recovers from.
            Kick::Resync => End::Close(close::GOING_AWAY, "reconnect and resync"),
        }
    }

    /// Buffers one frame for the socket; written on the next flush (or when the buffer fills).
    pub(super) async fn feed(&mut self, text: Utf8Bytes) -> Result<(), End> {
        self.socket.feed(WsMessage::Text(text)).await.map_err(|_| End::Gone)
    }

    pub(super) async fn flush(&mut self) -> Result<(), End> {
        self.socket.flush().await.map_err(|_| End::Gone)
    }

    async fn write_replies(&mut self, first: Vec<String>, pending: &mut Pending) -> Result<(), End> {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(replies) = next {
            for text in replies {
                self.feed(text.into()).await?;
            }
            n += 1;
            next = if n < WRITE_BATCH { pending.next().now_or_never().flatten() } else { None };
        }
        self.flush().await
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
        self.flush().await
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
        pending: &mut Pending,
    ) -> Result<(), End> {
        let msg = match incoming {
            None => return Err(End::Gone),
            Some(Err(e)) => {
                // The socket refuses messages past max_message_size (and frames past
                // max_frame_size): say so with 1009.
                return Err(if too_big(e) { End::Close(close::TOO_BIG, "frame too large") } else { End::Gone });
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

    /// The one place client frames are told apart: each family is handled in its own module.
    async fn dispatch(&mut self, frame: ClientFrame, r#ref: Option<String>, pending: &mut Pending) {
        match frame {
            // `auth` is only the first frame (see `auth`).
            ClientFrame::Auth { .. } => {
                self.reply_now(pending, ApiError::bad_request("already authenticated"), r#ref);
            }
            // Queued behind every earlier reply, so the `pong` proves they have taken effect.
            ClientFrame::Ping => {
                pending.push_back(Box::pin(std::future::ready(vec![ServerFrame::Pong(Pong { r#ref }).to_json()])));
            }
            ClientFrame::Send(frame) => self.send(frame, r#ref, pending).await,
            ClientFrame::Ack { conversation_id, seq } => {
                self.ack(ConversationId(conversation_id.0), Seq(seq), r#ref, pending).await
            }
            ClientFrame::Read { conversation_id, seq } => {
                self.read(ConversationId(conversation_id.0), Seq(seq), r#ref, pending).await
            }
            ClientFrame::Typing { conversation_id, active } => {
                self.typing(ConversationId(conversation_id.0), active, r#ref, pending).await
            }
            ClientFrame::PresenceSubscribe { user_ids } => self.presence_subscribe(user_ids, r#ref, pending),
            ClientFrame::PresenceUnsubscribe { user_ids } => self.presence_unsubscribe(&user_ids),
            ClientFrame::ToDevice { client_id, messages } => self.queue_to_device(client_id, messages, r#ref, pending),
            ClientFrame::ToDeviceAck { up_to_id } => self.ack_to_device(&up_to_id, r#ref, pending),
        }
    }

    /// Answers with an error frame, in order with the other replies.
    pub(super) fn reply_now(&self, pending: &mut Pending, e: ApiError, r#ref: Option<String>) {
        self.app.metrics.error(e.code);
        pending.push_back(Box::pin(std::future::ready(vec![e.to_frame(r#ref)])));
    }
}

/// An error reply built inside a deferred reply (counted like any other error).
pub(super) fn error_reply(app: &App, e: ApiError, r#ref: Option<String>) -> Vec<String> {
    app.metrics.error(e.code);
    vec![e.to_frame(r#ref)]
}

/// Whether a socket error is tungstenite refusing a message or frame over the configured size.
/// axum wraps tungstenite's error in its own; it is recovered by type, never by its text.
fn too_big(e: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error};
    matches!(e.into_inner().downcast_ref::<Error>(), Some(Error::Capacity(CapacityError::MessageTooLong { .. })))
}

enum Step {
    Reply(Vec<String>),
    Out(Outbound),
    In(Option<Result<WsMessage, axum::Error>>),
    Tick,
    Resync,
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error, ProtocolError};

    #[test]
    fn only_an_oversized_message_is_too_big() {
        let long = Error::Capacity(CapacityError::MessageTooLong { size: 2, max_size: 1 });
        assert!(super::too_big(axum::Error::new(long)));
        assert!(!super::too_big(axum::Error::new(Error::ConnectionClosed)));
        assert!(!super::too_big(axum::Error::new(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake))));
    }
}

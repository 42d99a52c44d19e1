//! The WebSocket gateway at `/v1/ws`: upgrade, authenticate, sync, then serve frames.
//!
//! `conn` owns the socket loop and the one `match` over client frames; each frame family has its
//! own module: `auth`, `send`, `pointers` (`ack`, `read`), `typing`, `presence`
//! (`presence_subscribe`, `presence_unsubscribe`), `to_device` (`to_device`, `to_device_ack`
//! and the device's queue) and `sync` (replay, resync, gap filling).

mod auth;
mod conn;
mod pointers;
mod presence;
mod send;
mod sync;
mod to_device;
mod typing;

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::{IntoResponse, Response};
use parley_core::limits::MAX_WS_MESSAGE_BYTES;
use parley_proto::ErrorCode;

use crate::error::ApiError;
use crate::state::App;

/// Per-connection read buffer. tungstenite's default (128 KiB) would cost that much per idle
/// connection; 4 KiB holds a typical frame and grows only while a larger one is read.
const READ_BUFFER: usize = 4 * 1024;
/// Frames are written out once this much is buffered (or on flush); queued frames are fed
/// together and flushed once, so a burst becomes one write.
const WRITE_BUFFER: usize = 16 * 1024;
/// Most bytes buffered for a socket before writes fail; the bounded outbound queue normally
/// closes a slow client (4009) long before.
const MAX_WRITE_BUFFER: usize = 4 * 1024 * 1024;

pub(crate) async fn upgrade(State(app): State<Arc<App>>, ws: WebSocketUpgrade) -> Response {
    if app.shutdown.is_cancelled() {
        return ApiError::new(ErrorCode::Unavailable, "server is shutting down").into_response();
    }
    if app.router.connection_count() >= app.config.max_connections {
        return ApiError::new(ErrorCode::Unavailable, "too many connections").into_response();
    }
    let tracker = app.connections.clone();
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_WS_MESSAGE_BYTES)
        .max_frame_size(MAX_WS_MESSAGE_BYTES)
        .on_upgrade(move |socket| tracker.track_future(conn::serve(app, socket)))
}

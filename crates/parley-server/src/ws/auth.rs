//! The `auth` frame: the first frame of every connection, which names the device (through
//! [`crate::auth::device_for_token`]) and is answered with `ready`, or closes the socket.

use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, Utf8Bytes, WebSocket};
use parley_core::model::Device;
use parley_proto::frames::{self, ClientFrame, Ready, ServerFrame, close};
use parley_proto::{ErrorCode, Id};

use super::conn::End;
use crate::error::ApiError;
use crate::state::App;

/// Waits for the `auth` frame and resolves its token to a device.
pub(super) async fn authenticate(app: &App, socket: &mut WebSocket) -> Result<Device, End> {
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
    match crate::auth::device_for_token(app, &token).await {
        Ok(Some(device)) => {
            let ready = ServerFrame::Ready(Ready {
                user_id: Id(device.user_id.0),
                device_id: Id(device.id.0),
                server_time: parley_core::now_ms(),
            })
            .to_json();
            socket.send(WsMessage::Text(ready.into())).await.map_err(|_| End::Gone)?;
            if let Some(frame) = crate::routes::push::invalidated_frame(app, device.id).await {
                socket.send(WsMessage::Text(frame.into())).await.map_err(|_| End::Gone)?;
            }
            if let Some(frame) = crate::routes::keys::low_frame(app, device.id).await {
                socket.send(WsMessage::Text(frame.into())).await.map_err(|_| End::Gone)?;
            }
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

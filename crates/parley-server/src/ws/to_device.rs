//! The `to_device` and `to_device_ack` frames, and the writing of this device's to-device queue.
//!
//! Payloads are never routed themselves: a commit that queues some for a device routes an
//! empty "read your queue" frame to it, and the connection reads the queue past the highest id it
//! has written (as on connect, before `synced`). So they arrive in order, without gaps and
//! without repeats, whichever node queued them; the queue keeps them until acknowledged.

use parley_core::ids::{DeviceId, UserId};
use parley_core::validate;
use parley_proto::Id;
use parley_proto::frames::{ServerFrame, ToDeviceIn, ToDeviceOut, ToDeviceSent};
use parley_store::e2ee;
use serde_json::value::RawValue;

use super::conn::{Conn, End, Pending, error_reply};
use crate::error::ApiError;

/// Payloads read from the queue per query.
const PAGE: u32 = 256;
/// Most payloads one frame may carry (the 64 KiB frame limit comes first in practice).
const MAX_MESSAGES: usize = 4096;

impl Conn {
    pub(super) fn queue_to_device(
        &mut self,
        client_id: String,
        messages: Vec<ToDeviceOut>,
        r#ref: Option<String>,
        pending: &mut Pending,
    ) {
        if let Err(e) = validate::client_id(&client_id) {
            return self.reply_now(pending, e.into(), r#ref);
        }
        if messages.is_empty() || messages.len() > MAX_MESSAGES {
            let e = ApiError::bad_request(format!("messages must hold 1 to {MAX_MESSAGES} payloads"));
            return self.reply_now(pending, e, r#ref);
        }
        if messages.iter().any(|m| !m.payload.is_object()) {
            return self.reply_now(pending, ApiError::bad_request("each payload must be a JSON object"), r#ref);
        }
        let out: Vec<e2ee::ToDeviceOut> = messages
            .into_iter()
            .map(|m| e2ee::ToDeviceOut {
                user: UserId(m.user_id.0),
                device: DeviceId(m.device_id.0),
                payload: m.payload.to_string(),
            })
            .collect();
        let (app, user, device) = (self.app.clone(), self.user, self.device);
        pending.push_back(Box::pin(async move {
            match app.store.queue_to_device(user, device, client_id.clone(), out).await {
                Ok(()) => vec![ServerFrame::ToDeviceSent(ToDeviceSent { r#ref, client_id }).to_json()],
                Err(e) => error_reply(&app, e.into(), r#ref),
            }
        }));
    }

    pub(super) fn ack_to_device(&mut self, up_to_id: &str, r#ref: Option<String>, pending: &mut Pending) {
        let Some(up_to) = up_to_id.parse::<i64>().ok().filter(|id| *id >= 0) else {
            return self.reply_now(pending, ApiError::bad_request("up_to_id must be a to-device id"), r#ref);
        };
        let (app, device) = (self.app.clone(), self.device);
        pending.push_back(Box::pin(async move {
            match app.store.ack_to_device(device, up_to).await {
                Ok(()) => Vec::new(),
                Err(e) => error_reply(&app, e.into(), r#ref),
            }
        }));
    }

    /// Writes this device's queued payloads past what this connection has written.
    pub(super) async fn write_to_device(&mut self) -> Result<(), End> {
        loop {
            let batch = self
                .app
                .store
                .to_device_after(self.device, self.to_device_seen, PAGE)
                .await
                .map_err(|_| End::Close(parley_proto::frames::close::GOING_AWAY, "sync failed"))?;
            let n = batch.len();
            for m in batch {
                let payload = RawValue::from_string(m.payload)
                    .unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("{} is JSON"));
                let frame = ToDeviceIn {
                    id: m.id.to_string(),
                    sender_user_id: Id(m.sender_user.0),
                    sender_device_id: Id(m.sender_device.0),
                    payload,
                };
                self.to_device_seen = m.id;
                self.feed(ServerFrame::ToDevice(&frame).to_json().into()).await?;
            }
            if n < PAGE as usize {
                return self.flush().await;
            }
        }
    }
}

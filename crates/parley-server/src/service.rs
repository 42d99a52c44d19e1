//! The message service's entry point for sends, shared by the WebSocket and REST: rate limit,
//! validation, then the store (which persists before answering and publishes for fanout).

use parley_core::ids::{ConversationId, DeviceId, UserId};
use parley_core::validate;
use std::time::Instant;

use parley_store::{NewMessage, SendOutcome, Ticket};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::state::App;

pub struct SendRequest {
    pub conversation_id: ConversationId,
    pub client_id: String,
    pub kind: String,
    pub body: Value,
}

/// Checks and queues a send; the ticket resolves when the message is durable. A connection calls
/// this in frame order, so its pipelined sends keep their order in the log.
pub async fn enqueue(app: &App, user: UserId, device: DeviceId, req: SendRequest) -> ApiResult<Queued> {
    if let Err(ms) = app.rate.check(device) {
        Metrics::inc(&app.metrics.rate_limited);
        return Err(ApiError::rate_limited(ms));
    }
    validate::client_id(&req.client_id)?;
    let body = validate::message_body(&req.kind, &req.body)?;
    Metrics::inc(&app.metrics.sends);
    let ticket = app
        .store
        .enqueue_send(NewMessage {
            conversation_id: req.conversation_id,
            sender_id: user,
            sender_device_id: Some(device),
            client_id: Some(req.client_id),
            kind: body.kind,
            body: body.json,
            target_seq: body.target_seq,
        })
        .await?;
    Ok(Queued { ticket, at: Instant::now() })
}

/// A send in the store's queue.
pub struct Queued {
    ticket: Ticket<SendOutcome>,
    at: Instant,
}

/// Waits for a queued send to be durable.
pub async fn finish(app: &App, queued: Queued) -> ApiResult<SendOutcome> {
    let outcome = queued.ticket.wait().await?;
    app.metrics.send_to_persist.observe(queued.at.elapsed().as_micros() as u64);
    if outcome.duplicate {
        Metrics::inc(&app.metrics.sends_duplicate);
    }
    Ok(outcome)
}

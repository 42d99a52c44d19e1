//! The message service's entry point for sends, shared by the WebSocket and REST: rate limit,
//! validation, then the store (which persists before answering and publishes for fanout).

use parley_core::ids::{ConversationId, DeviceId, UserId};
use parley_core::validate;
use std::time::Instant;

use parley_proto::ErrorCode;
use parley_proto::frames::SendFrame;
use parley_store::{NewMessage, SendOutcome, Ticket};

use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::routed::Interest;
use crate::state::App;

/// Checks and queues a send; the ticket resolves when the message is durable. A connection calls
/// this in frame order, so its pipelined sends keep their order in the log. REST builds the same
/// `SendFrame` from its path and body, so both ways in are checked alike.
pub(crate) async fn enqueue(app: &App, user: UserId, device: DeviceId, req: SendFrame) -> ApiResult<Queued> {
    let conversation_id: ConversationId = ConversationId(req.conversation_id.0);
    if let Err(ms) = app.rate.check(device) {
        Metrics::inc(&app.metrics.rate_limited);
        return Err(ApiError::rate_limited(ms));
    }
    validate::client_id(&req.client_id)?;
    let body = validate::message_body(&req.kind, &req.body)?;
    Metrics::inc(&app.metrics.sends);
    // In a cluster, routing progress is tracked from before the send exists (see `routed`).
    let interest = app.routed.as_ref().map(|r| r.expect(conversation_id));
    let ticket = app
        .store
        .enqueue_send(NewMessage {
            conversation_id,
            sender_id: user,
            sender_device_id: Some(device),
            client_id: Some(req.client_id),
            kind: body.kind,
            body: body.json,
            target_seq: body.target_seq,
            media: body.media,
            device_epoch: body.device_epoch,
        })
        .await?;
    Ok(Queued { ticket, at: Instant::now(), interest })
}

/// A send in the store's queue.
pub(crate) struct Queued {
    ticket: Ticket<SendOutcome>,
    at: Instant,
    interest: Option<Interest>,
}

/// Waits for a queued send to be durable and, in a cluster, routed: handed to every node that
/// has a recipient's connection (flushed to NATS) or stored as a durable fanout job. A repeat is
/// routed again, so a retry after `unavailable` still reaches everyone.
pub(crate) async fn finish(app: &App, queued: Queued) -> ApiResult<SendOutcome> {
    let outcome = queued.ticket.wait().await?;
    app.metrics.send_to_persist.observe(queued.at.elapsed().as_micros() as u64);
    if outcome.duplicate {
        Metrics::inc(&app.metrics.sends_duplicate);
    }
    if let (Some(routed), Some(interest)) = (&app.routed, &queued.interest) {
        let m = &outcome.message;
        let result = if outcome.duplicate {
            crate::fanout::route_again(app, m).await
        } else {
            routed.wait(interest, m.seq).await
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, conv = %m.conversation_id, seq = %m.seq, "stored but not routed");
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "the message is stored but could not yet reach every node: send it again with the same client_id",
            ));
        }
    }
    Ok(outcome)
}

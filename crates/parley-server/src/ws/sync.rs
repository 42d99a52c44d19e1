//! Connect-time sync: replay every message past this device's cursors, in seq order per
//! conversation, before `synced`.
//!
//! The connection registers with the router before the replay starts, so anything committed
//! during the replay is also queued live; the connection's per-conversation high-water marks
//! (`seen`) drop whatever the replay already wrote. Nothing is lost and nothing is reordered.

use std::collections::HashMap;

use parley_core::ids::{ConversationId, DeviceId, UserId};
use parley_proto::frames::ServerFrame;

use crate::convert;
use crate::error::ApiResult;
use crate::state::App;

/// Log entries read per query during replay.
pub const PAGE: u32 = 512;

/// One page of the log after `after`, encoded, skipping this device's own sends. Returns the
/// frames and the last seq examined (`after` when the page was empty).
pub async fn page(
    app: &App,
    device: DeviceId,
    conv: ConversationId,
    after: i64,
    upto: i64,
) -> ApiResult<(Vec<String>, i64, bool)> {
    let entries = app.store.log_range(conv, after, upto, PAGE).await?;
    let full = entries.len() as u32 == PAGE;
    let last = entries.last().map_or(after, |m| m.seq);
    let frames = entries
        .iter()
        .filter(|m| m.sender_device_id != Some(device))
        .map(|m| ServerFrame::Message(&convert::message(m)).to_json())
        .collect();
    Ok((frames, last, full))
}

/// The conversations to replay: (conversation, after_seq, upto_seq).
pub async fn plan(app: &App, device: DeviceId, user: UserId) -> ApiResult<Vec<(ConversationId, i64, i64)>> {
    let backlog = app.store.backlog(device, user).await?;
    Ok(backlog.into_iter().map(|b| (b.conversation_id, b.after_seq, b.upto_seq)).collect())
}

/// High-water marks of what a connection has written (or skipped as its own), per conversation.
pub type Seen = HashMap<ConversationId, i64>;

//! What both backends append to a conversation's log.

use parley_core::MessageKind;
use parley_core::ids::*;

/// A new log entry, before it has a seq.
pub(crate) struct Entry {
    pub conv: ConversationId,
    pub sender: UserId,
    pub device: Option<DeviceId>,
    pub client_id: Option<String>,
    pub kind: MessageKind,
    pub body: String,
    pub target_seq: Option<i64>,
}

impl Entry {
    /// A system entry: written by the server on behalf of `actor`.
    pub fn system(conv: ConversationId, actor: UserId, kind: MessageKind, body: serde_json::Value) -> Entry {
        Entry { conv, sender: actor, device: None, client_id: None, kind, body: body.to_string(), target_seq: None }
    }
}

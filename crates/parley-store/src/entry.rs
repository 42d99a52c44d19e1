//! What every backend appends to a conversation's log, and a member's window on it: the
//! vocabulary the backends share (not used above the store).

use parley_core::MessageKind;
use parley_core::ids::*;
use parley_core::model::{ConversationKind, Role};

/// A new log entry, before it has a seq.
pub struct Entry {
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
/// A user's membership row and the conversation it is in.
pub struct Window {
    pub joined: i64,
    pub left: Option<i64>,
    /// The conversation's last seq.
    pub last: i64,
    pub role: Role,
    pub kind: ConversationKind,
}

impl Window {
    /// The last seq this member may see.
    pub fn upto(&self) -> i64 {
        self.left.unwrap_or(self.last)
    }
}

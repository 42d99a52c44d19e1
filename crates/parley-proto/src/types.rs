//! The objects the protocol shares between REST and the WebSocket: `message`, `conversation`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::Id;

/// A log entry of a conversation, as clients see it.
///
/// `body` is kept as raw JSON: the server stores the canonical body text once and copies it into
/// frames without parsing it again, and clients parse it by `kind`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Message {
    pub conversation_id: Id,
    pub seq: i64,
    pub message_id: Id,
    pub sender_id: Id,
    pub sender_device_id: Option<Id>,
    pub client_id: Option<String>,
    pub ts: i64,
    pub kind: String,
    pub body: Box<RawValue>,
}

/// A conversation as one member sees it: the pointers and unread count are the caller's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Conversation {
    pub conversation_id: Id,
    pub kind: String,
    pub title: Option<String>,
    pub created_at: i64,
    pub last_seq: i64,
    pub last_message: Option<Message>,
    pub unread_count: i64,
    pub read_seq: i64,
    pub delivered_seq: i64,
    pub members_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<Member>>,
    /// The caller's notification settings for it.
    #[serde(default)]
    pub settings: ConversationSettings,
    /// Whether members may send only `encrypted` messages (and `delete`); set at creation.
    #[serde(default)]
    pub encrypted: bool,
    /// Changes whenever a member joins or leaves or a member's device list changes.
    #[serde(default)]
    pub device_epoch: i64,
}

/// A member's notification settings for a conversation (`PATCH /v1/conversations/{id}/settings`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationSettings {
    /// No pushes until then (ms since the epoch); null: not muted.
    pub muted_until: Option<i64>,
    /// `all`, `mentions` or `none`.
    pub notify: String,
}

impl Default for ConversationSettings {
    fn default() -> Self {
        ConversationSettings { muted_until: None, notify: "all".into() }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Member {
    pub user_id: Id,
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub read_seq: i64,
    pub delivered_seq: i64,
}

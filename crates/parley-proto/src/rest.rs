//! REST request and response bodies under `/v1/`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Conversation, ErrorCode, Id, Message};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateAccount {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub user_id: Id,
    pub username: String,
    pub display_name: String,
    /// Only in `GET`/`PATCH /v1/me`: whether others see this user's last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_visible: Option<bool>,
}

/// `PATCH /v1/me`: any of the fields.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PatchMe {
    #[serde(default)]
    pub last_seen_visible: Option<bool>,
}

/// `GET /v1/presence?user_ids=1,2,3`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PresenceList {
    pub presence: Vec<crate::frames::Presence>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateSession {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub device_name: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    pub user_id: Id,
    pub device_id: Id,
    pub token: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Device {
    pub device_id: Id,
    pub name: String,
    pub created_at: i64,
    pub last_active_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Devices {
    pub devices: Vec<Device>,
}

/// `POST /v1/conversations`, told apart by `kind`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CreateConversation {
    Direct { user_id: Id },
    Group { title: String, member_ids: Vec<Id> },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConversationEnvelope {
    pub conversation: Conversation,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Conversations {
    pub conversations: Vec<Conversation>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Messages {
    pub messages: Vec<Message>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MessageEnvelope {
    pub message: Message,
}

/// `POST /v1/conversations/{id}/messages`: the REST form of a WebSocket `send`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PostMessage {
    pub client_id: String,
    pub kind: String,
    pub body: Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Receipts {
    pub members_count: i64,
    pub delivered_count: i64,
    pub read_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberReceipt>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberReceipt {
    pub user_id: Id,
    pub delivered: bool,
    pub read: bool,
}

/// The body of every REST error: `{"error": {"code", "message", "retry_after_ms"?}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
}

/// `PATCH /v1/conversations/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PatchConversation {
    pub title: String,
}

/// `POST /v1/conversations/{id}/members`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AddMembers {
    pub user_ids: Vec<Id>,
}

/// `PATCH /v1/conversations/{id}/members/{user_id}` (an addition): promote or demote.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PatchMember {
    pub role: String,
}

/// `POST /v1/admin/accounts` (an addition, admin token only): many accounts at once, each with
/// one signed-in device, for load tests and provisioning.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BulkAccounts {
    /// Usernames are `{prefix}{n}` for n in 0..count.
    pub prefix: String,
    pub count: u32,
    /// The password every account gets.
    pub password: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BulkAccount {
    pub user_id: Id,
    pub username: String,
    pub device_id: Id,
    pub token: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BulkAccountsCreated {
    pub accounts: Vec<BulkAccount>,
}

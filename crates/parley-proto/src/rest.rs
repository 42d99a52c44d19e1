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
    /// Only in `GET`/`PATCH /v1/me`: do not disturb until then (null: off).
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub dnd_until: Option<Option<i64>>,
}

/// `PATCH /v1/me`: any of the fields.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PatchMe {
    #[serde(default)]
    pub last_seen_visible: Option<bool>,
    /// Do not disturb until then; `null` ends it; absent leaves it.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub dnd_until: Option<Option<i64>>,
}

/// A field that may be absent (outer `None`), `null` (`Some(None)`) or a value.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `PATCH /v1/conversations/{id}/settings`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchSettings {
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<Option<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SettingsEnvelope {
    pub settings: crate::types::ConversationSettings,
}

/// `PUT /v1/devices/current/push`: a Web Push/UnifiedPush subscription or a provider token.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutPush {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<PushKeys>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// APNs: `production` (default) or `sandbox`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Browsers' `PushSubscription.toJSON()` carries this; accepted and ignored.
    #[serde(default, rename = "expirationTime", skip_serializing)]
    pub expiration_time: Option<Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushKeys {
    pub p256dh: String,
    pub auth: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushEnvelope {
    pub push: PushRegistered,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushRegistered {
    pub kind: String,
    pub registered_at: i64,
}

/// `GET /v1/push/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushStatusEnvelope {
    pub push: Option<PushStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushStatus {
    pub kind: String,
    pub registered_at: i64,
    pub last_success_at: Option<i64>,
    pub last_error: Option<PushError>,
    pub invalidated_at: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushError {
    pub at: i64,
    pub status: u16,
    pub reason: String,
}

/// `GET /v1/push/vapid`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VapidKey {
    pub public_key: String,
}

/// `POST /v1/push/test`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushTest {
    pub ok: bool,
    /// The provider's HTTP status (0: no answer).
    pub status: u16,
    /// What the provider said, when it refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
    Direct {
        user_id: Id,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        encrypted: bool,
    },
    Group {
        title: String,
        member_ids: Vec<Id>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        encrypted: bool,
    },
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
    /// With `payload_too_large` for an upload: the largest size this server takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// With `stale_devices`: the conversation's current device epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_epoch: Option<i64>,
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

// Media

/// `POST /v1/media`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateMedia {
    pub size: u64,
    pub content_type: String,
    /// Standard base64 of the SHA-256 of the bytes.
    pub sha256: String,
}

/// Where and how to upload: `PUT url` with exactly `headers` and the exact bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UploadTarget {
    pub method: String,
    pub url: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub expires_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MediaCreated {
    pub media_id: Id,
    pub upload: UploadTarget,
    /// This server's addition: the record itself (state `pending`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaInfo>,
}

/// The `media` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaInfo {
    pub media_id: Id,
    pub size: u64,
    pub content_type: String,
    /// Standard base64.
    pub sha256: String,
    /// `pending` or `ready`.
    pub state: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MediaEnvelope {
    pub media: MediaInfo,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DownloadTarget {
    pub url: String,
    pub expires_at: i64,
}

/// `GET /v1/media/{media_id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MediaWithDownload {
    pub media: MediaInfo,
    pub download: DownloadTarget,
    /// This server's addition: for the uploader of a `pending` upload, a fresh upload URL (an
    /// upload interrupted past its URL's expiry resumes without starting over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadTarget>,
}

// End-to-end encryption: the key directory. Key material is opaque JSON.

/// One key the device publishes (one-time or fallback).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedKey {
    pub key_id: String,
    pub key: Value,
}

/// `PUT /v1/keys`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PutKeys {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub one_time_keys: Vec<PublishedKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_key: Option<PublishedKey>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeysUploaded {
    pub one_time_key_count: u32,
}

/// `GET /v1/keys/count`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeysCount {
    pub one_time_key_count: u32,
    /// Whether an unused fallback key is stored.
    pub fallback_key: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceRef {
    pub user_id: Id,
    pub device_id: Id,
}

/// `POST /v1/keys/claim`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClaimKeys {
    pub devices: Vec<DeviceRef>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClaimedDevice {
    pub user_id: Id,
    pub device_id: Id,
    pub identity: Value,
    pub one_time_key: Option<PublishedKey>,
    /// The key handed out is the fallback key (no one-time key was left).
    pub fallback: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClaimedKeys {
    pub devices: Vec<ClaimedDevice>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceKeys {
    pub device_id: Id,
    pub identity: Option<Value>,
}

/// `GET /v1/users/{user_id}/devices`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserDevices {
    pub user_id: Id,
    pub list_version: i64,
    pub devices: Vec<DeviceKeys>,
}

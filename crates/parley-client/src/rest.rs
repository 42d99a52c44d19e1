//! A thin typed client for the REST API under `/v1/`, one method per endpoint of PROTOCOL.md.

use parley_proto::rest::{
    BulkAccount, BulkAccountsCreated, ClaimKeys, ClaimedKeys, ConversationEnvelope, Conversations, CreateAccount,
    CreateConversation, CreateSession, Device, DeviceRef, Devices, ErrorBody, KeysCount, KeysUploaded, MessageEnvelope,
    Messages, PostMessage, PutKeys, Receipts, Session, User, UserDevices,
};
use parley_proto::{Conversation, ErrorCode, Id, Message};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{ClientError, Result};

/// The WebSocket URL for a server base URL: `http://h:p` → `ws://h:p/v1/ws`.
pub fn ws_url(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{base}/v1/ws")
}

/// A REST client. Cheap to clone: clones share one connection pool.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    base: String,
    pub(crate) token: Option<String>,
}

impl Client {
    /// `base_url` is the server root, e.g. `http://127.0.0.1:7700`.
    pub fn new(base_url: impl Into<String>) -> Self {
        let base = base_url.into().trim_end_matches('/').to_string();
        Client { http: reqwest::Client::new(), base, token: None }
    }

    /// The same client, authenticating as `token` (the pool is still shared).
    pub fn with_token(&self, token: impl Into<String>) -> Self {
        Client { token: Some(token.into()), ..self.clone() }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn ws_url(&self) -> String {
        ws_url(&self.base)
    }

    pub async fn create_account(&self, username: &str, password: &str, display_name: Option<&str>) -> Result<User> {
        let body = CreateAccount {
            username: username.into(),
            password: password.into(),
            display_name: display_name.map(Into::into),
        };
        self.json(Method::POST, &["accounts"], Some(&body)).await
    }

    /// Logs in; every login is a new device. Use the returned token with [`Client::with_token`].
    pub async fn login(&self, username: &str, password: &str, device_name: Option<&str>) -> Result<Session> {
        let body = CreateSession {
            username: username.into(),
            password: password.into(),
            device_name: device_name.map(Into::into),
        };
        self.json(Method::POST, &["sessions"], Some(&body)).await
    }

    pub async fn me(&self) -> Result<User> {
        self.json(Method::GET, &["me"], None::<&()>).await
    }

    pub async fn devices(&self) -> Result<Vec<Device>> {
        let d: Devices = self.json(Method::GET, &["devices"], None::<&()>).await?;
        Ok(d.devices)
    }

    pub async fn delete_device(&self, device_id: Id) -> Result<()> {
        let id = device_id.to_string();
        self.empty(Method::DELETE, &["devices", &id], None::<&()>).await
    }

    /// Revokes this client's token (its open WebSocket is closed with 4010).
    pub async fn logout(&self) -> Result<()> {
        self.empty(Method::DELETE, &["sessions", "current"], None::<&()>).await
    }

    /// Registers this device for pushes (a Web Push/UnifiedPush subscription or an APNs/FCM
    /// token), replacing any earlier registration.
    pub async fn register_push(
        &self,
        registration: &parley_proto::rest::PutPush,
    ) -> Result<parley_proto::rest::PushRegistered> {
        let e: parley_proto::rest::PushEnvelope =
            self.json(Method::PUT, &["devices", "current", "push"], Some(registration)).await?;
        Ok(e.push)
    }

    pub async fn unregister_push(&self) -> Result<()> {
        self.empty(Method::DELETE, &["devices", "current", "push"], None::<&()>).await
    }

    /// This device's registration and what became of its pushes (`None`: not registered).
    pub async fn push_status(&self) -> Result<Option<parley_proto::rest::PushStatus>> {
        let e: parley_proto::rest::PushStatusEnvelope =
            self.json(Method::GET, &["push", "status"], None::<&()>).await?;
        Ok(e.push)
    }

    /// Sends one push to this device now and reports the provider's answer.
    pub async fn push_test(&self) -> Result<parley_proto::rest::PushTest> {
        self.json(Method::POST, &["push", "test"], Some(&serde_json::json!({}))).await
    }

    pub async fn user_by_name(&self, username: &str) -> Result<User> {
        self.json(Method::GET, &["users", username], None::<&()>).await
    }

    pub async fn create_direct(&self, user_id: Id) -> Result<Conversation> {
        self.create_direct_with(user_id, false).await
    }

    /// The direct conversation with `user_id`, end-to-end encrypted when it is created here with
    /// `encrypted` (an existing one keeps what it is).
    pub async fn create_direct_with(&self, user_id: Id, encrypted: bool) -> Result<Conversation> {
        let body = CreateConversation::Direct { user_id, encrypted };
        let e: ConversationEnvelope = self.json(Method::POST, &["conversations"], Some(&body)).await?;
        Ok(e.conversation)
    }

    pub async fn create_group(&self, title: &str, member_ids: &[Id]) -> Result<Conversation> {
        self.create_group_with(title, member_ids, false).await
    }

    pub async fn create_group_with(&self, title: &str, member_ids: &[Id], encrypted: bool) -> Result<Conversation> {
        let body = CreateConversation::Group { title: title.into(), member_ids: member_ids.to_vec(), encrypted };
        let e: ConversationEnvelope = self.json(Method::POST, &["conversations"], Some(&body)).await?;
        Ok(e.conversation)
    }

    pub async fn conversations(&self) -> Result<Vec<Conversation>> {
        let c: Conversations = self.json(Method::GET, &["conversations"], None::<&()>).await?;
        Ok(c.conversations)
    }

    pub async fn conversation(&self, conv: Id) -> Result<Conversation> {
        let id = conv.to_string();
        let e: ConversationEnvelope = self.json(Method::GET, &["conversations", &id], None::<&()>).await?;
        Ok(e.conversation)
    }

    pub async fn patch_title(&self, conv: Id, title: &str) -> Result<Conversation> {
        let id = conv.to_string();
        let body = json!({ "title": title });
        let e: ConversationEnvelope = self.json(Method::PATCH, &["conversations", &id], Some(&body)).await?;
        Ok(e.conversation)
    }

    pub async fn add_members(&self, conv: Id, user_ids: &[Id]) -> Result<Conversation> {
        let id = conv.to_string();
        let body = json!({ "user_ids": user_ids });
        let e: ConversationEnvelope = self.json(Method::POST, &["conversations", &id, "members"], Some(&body)).await?;
        Ok(e.conversation)
    }

    /// Promotes (`"admin"`) or demotes (`"member"`) a member of a group.
    pub async fn set_role(&self, conv: Id, user_id: Id, role: &str) -> Result<Conversation> {
        let (id, user) = (conv.to_string(), user_id.to_string());
        let body = json!({ "role": role });
        let e: ConversationEnvelope =
            self.json(Method::PATCH, &["conversations", &id, "members", &user], Some(&body)).await?;
        Ok(e.conversation)
    }

    /// Admin API: `count` accounts `{prefix}{n}`, each with one signed-in device. This client's
    /// token must be the server's admin token.
    pub async fn bulk_accounts(&self, prefix: &str, count: u32, password: &str) -> Result<Vec<BulkAccount>> {
        let body = json!({ "prefix": prefix, "count": count, "password": password });
        let r: BulkAccountsCreated = self.json(Method::POST, &["admin", "accounts"], Some(&body)).await?;
        Ok(r.accounts)
    }

    pub async fn remove_member(&self, conv: Id, user_id: Id) -> Result<()> {
        let (id, user) = (conv.to_string(), user_id.to_string());
        self.empty(Method::DELETE, &["conversations", &id, "members", &user], None::<&()>).await
    }

    /// One page of the log, ascending by seq; see PROTOCOL.md for how the bounds pick the page.
    pub async fn history(
        &self,
        conv: Id,
        after_seq: Option<i64>,
        before_seq: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Vec<Message>> {
        let id = conv.to_string();
        let mut url = self.url(&["conversations", &id, "messages"])?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = after_seq {
                q.append_pair("after_seq", &s.to_string());
            }
            if let Some(s) = before_seq {
                q.append_pair("before_seq", &s.to_string());
            }
            if let Some(l) = limit {
                q.append_pair("limit", &l.to_string());
            }
        }
        let m: Messages = decode(self.send(Method::GET, url, None::<&()>).await?).await?;
        Ok(m.messages)
    }

    /// The REST form of a WebSocket `send`; idempotent by `client_id`.
    pub async fn post_message(&self, conv: Id, client_id: &str, kind: &str, body: Value) -> Result<Message> {
        let id = conv.to_string();
        let req = PostMessage { client_id: client_id.into(), kind: kind.into(), body };
        let e: MessageEnvelope = self.json(Method::POST, &["conversations", &id, "messages"], Some(&req)).await?;
        Ok(e.message)
    }

    pub async fn receipts(&self, conv: Id, seq: i64) -> Result<Receipts> {
        let (id, seq) = (conv.to_string(), seq.to_string());
        let path = ["conversations", &id, "messages", &seq, "receipts"];
        self.json(Method::GET, &path, None::<&()>).await
    }

    /// `PUT /v1/keys`: publishes this device's identity, one-time keys and fallback key (each
    /// part optional); answers how many unused one-time keys the server now holds.
    pub async fn put_keys(&self, keys: &PutKeys) -> Result<KeysUploaded> {
        self.json(Method::PUT, &["keys"], Some(keys)).await
    }

    /// `GET /v1/keys/count`: this device's unused one-time keys, and whether a fallback key is
    /// stored.
    pub async fn keys_count(&self) -> Result<KeysCount> {
        self.json(Method::GET, &["keys", "count"], None::<&()>).await
    }

    /// `POST /v1/keys/claim`: one one-time key (or the fallback key) of each device, for opening
    /// Olm sessions. Devices the caller may not see and devices without identity are left out.
    pub async fn claim_keys(&self, devices: &[DeviceRef]) -> Result<ClaimedKeys> {
        self.json(Method::POST, &["keys", "claim"], Some(&ClaimKeys { devices: devices.to_vec() })).await
    }

    /// `GET /v1/users/{user_id}/devices`: a user's devices with their identities and the list's
    /// version.
    pub async fn user_devices(&self, user_id: Id) -> Result<UserDevices> {
        let id = user_id.to_string();
        self.json(Method::GET, &["users", &id, "devices"], None::<&()>).await
    }

    /// The server's `/metrics` page (Prometheus text format), for tools that explain a run.
    pub async fn metrics_text(&self) -> Result<String> {
        let mut url =
            Url::parse(&self.base).map_err(|e| ClientError::Decode(format!("bad base url {:?}: {e}", self.base)))?;
        url.set_path("/metrics");
        Ok(self.send(Method::GET, url, None::<&()>).await?.text().await?)
    }

    /// `/v1/` plus the segments, each percent-encoded, so user input cannot change the path.
    pub(crate) fn url(&self, segments: &[&str]) -> Result<Url> {
        let mut url =
            Url::parse(&self.base).map_err(|e| ClientError::Decode(format!("bad base url {:?}: {e}", self.base)))?;
        url.path_segments_mut()
            .map_err(|_| ClientError::Decode(format!("base url {:?} cannot hold a path", self.base)))?
            .pop_if_empty()
            .push("v1")
            .extend(segments);
        Ok(url)
    }

    pub(crate) async fn json<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<R> {
        let url = self.url(segments)?;
        decode(self.send(method, url, body).await?).await
    }

    pub(crate) async fn empty<B: Serialize>(&self, method: Method, segments: &[&str], body: Option<&B>) -> Result<()> {
        let url = self.url(segments)?;
        self.send(method, url, body).await.map(drop)
    }

    /// Sends the request and turns any non-2xx answer into [`ClientError::Api`].
    async fn send<B: Serialize>(&self, method: Method, url: Url, body: Option<&B>) -> Result<reqwest::Response> {
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp.bytes().await?;
        Err(api_error(status, &bytes))
    }
}

async fn decode<R: DeserializeOwned>(resp: reqwest::Response) -> Result<R> {
    let bytes = resp.bytes().await?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Reads `{"error": {...}}`; a body that is not one (a proxy's HTML page, say) still yields an
/// `Api` error, with the code guessed from the status, so callers can always match on `code`.
pub(crate) fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let status = status.as_u16();
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => ClientError::Api {
            status,
            code: b.error.code,
            message: b.error.message,
            retry_after_ms: b.error.retry_after_ms,
            device_epoch: b.error.device_epoch,
        },
        Err(_) => ClientError::Api {
            status,
            code: code_for_status(status),
            message: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            retry_after_ms: None,
            device_epoch: None,
        },
    }
}

fn code_for_status(status: u16) -> ErrorCode {
    match status {
        400 => ErrorCode::BadRequest,
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::PayloadTooLarge,
        429 => ErrorCode::RateLimited,
        503 => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_url_swaps_scheme() {
        assert_eq!(ws_url("http://127.0.0.1:7700"), "ws://127.0.0.1:7700/v1/ws");
        assert_eq!(ws_url("https://x.org/"), "wss://x.org/v1/ws");
    }

    #[test]
    fn url_encodes_segments() {
        let c = Client::new("http://h:1/");
        assert_eq!(c.url(&["users", "a/b c"]).unwrap().as_str(), "http://h:1/v1/users/a%2Fb%20c");
    }

    #[test]
    fn parses_error_bodies() {
        let body = br#"{"error":{"code":"rate_limited","message":"slow","retry_after_ms":250}}"#;
        let e = api_error(StatusCode::TOO_MANY_REQUESTS, body);
        assert_eq!(e.code(), Some(ErrorCode::RateLimited));
        assert_eq!(e.retry_after_ms(), Some(250));
        let body = br#"{"error":{"code":"stale_devices","message":"epoch","device_epoch":8}}"#;
        let e = api_error(StatusCode::CONFLICT, body);
        assert_eq!(e.code(), Some(ErrorCode::StaleDevices));
        assert_eq!(e.device_epoch(), Some(8));
        let e = api_error(StatusCode::BAD_GATEWAY, b"<html>");
        assert!(matches!(e, ClientError::Api { status: 502, code: ErrorCode::Internal, .. }));
    }
}

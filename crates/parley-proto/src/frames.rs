//! WebSocket frames: what clients send ([`ClientFrame`]) and what the server sends
//! ([`ServerFrame`] and its parts). Every frame is one JSON object with a `type`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Conversation, ErrorCode, Id, Message};

/// Longest `ref` a client may attach to a frame, in bytes.
pub const MAX_REF_BYTES: usize = 64;

/// The `type` values a client may send. Anything else is `unknown_type`.
pub const CLIENT_TYPES: [&str; 10] = [
    "auth",
    "send",
    "ack",
    "read",
    "typing",
    "presence_subscribe",
    "presence_unsubscribe",
    "ping",
    "to_device",
    "to_device_ack",
];

/// A frame from a client. `ref` is not part of the variants: it is read from the envelope
/// first, so that even a frame whose fields are wrong gets its `ref` back in the error.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Auth {
        token: String,
    },
    Send(SendFrame),
    Ack {
        conversation_id: Id,
        seq: i64,
    },
    Read {
        conversation_id: Id,
        seq: i64,
    },
    Typing {
        conversation_id: Id,
        active: bool,
    },
    /// Ids stay the strings the client sent, so every answer names exactly what was asked, even
    /// a string that is no id at all.
    PresenceSubscribe {
        user_ids: Vec<String>,
    },
    PresenceUnsubscribe {
        user_ids: Vec<String>,
    },
    Ping,
    /// Per-device payloads (key exchange) queued outside the log.
    ToDevice {
        client_id: String,
        messages: Vec<ToDeviceOut>,
    },
    /// Removes this device's queued to-device messages up to this id.
    ToDeviceAck {
        up_to_id: String,
    },
}

/// One payload of a `to_device` frame, for one device.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToDeviceOut {
    pub user_id: Id,
    pub device_id: Id,
    pub payload: Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendFrame {
    pub conversation_id: Id,
    pub client_id: String,
    pub kind: String,
    pub body: Value,
}

/// Why a client frame could not be decoded; the server answers with an `error` frame carrying
/// this code and message (and the `ref`, when one could be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
    pub r#ref: Option<String>,
}

/// Decodes one client text frame, telling malformed JSON, a missing or unknown `type`, and
/// missing or mistyped fields apart.
pub fn decode_client_frame(text: &str) -> Result<(ClientFrame, Option<String>), DecodeError> {
    let err = |code, message: String, r#ref| DecodeError { code, message, r#ref };
    let mut value: Value =
        serde_json::from_str(text).map_err(|e| err(ErrorCode::InvalidFrame, format!("malformed JSON: {e}"), None))?;
    let Some(obj) = value.as_object_mut() else {
        return Err(err(ErrorCode::InvalidFrame, "a frame must be a JSON object".into(), None));
    };
    let r#ref = match obj.remove("ref") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= MAX_REF_BYTES => Some(s),
        Some(Value::String(_)) => {
            return Err(err(ErrorCode::InvalidFrame, format!("ref is longer than {MAX_REF_BYTES} bytes"), None));
        }
        Some(_) => {
            return Err(err(ErrorCode::InvalidFrame, "ref must be a string".into(), None));
        }
    };
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(_) => {
            return Err(err(ErrorCode::InvalidFrame, "type must be a string".into(), r#ref));
        }
        None => {
            return Err(err(ErrorCode::InvalidFrame, "missing field `type`".into(), r#ref));
        }
    };
    if !CLIENT_TYPES.contains(&ty) {
        let message = format!("unknown frame type `{}`", ty.chars().take(64).collect::<String>());
        return Err(err(ErrorCode::UnknownType, message, r#ref));
    }
    match serde_json::from_value::<ClientFrame>(value) {
        Ok(frame) => Ok((frame, r#ref)),
        Err(e) => Err(err(ErrorCode::InvalidFrame, e.to_string(), r#ref)),
    }
}

/// A frame from the server. Serialized with its `type` tag; clients decode the parts below by
/// reading `type` first.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Ready(Ready),
    Synced(Synced),
    Message(&'a Message),
    Sent(Sent),
    Receipt(Receipt),
    Typing(Typing),
    Presence(Presence),
    Conversation(&'a Conversation),
    Error(ErrorFrame),
    Pong(Pong),
    PushInvalidated(PushInvalidated),
    ToDeviceSent(ToDeviceSent),
    ToDevice(&'a ToDeviceIn),
    DeviceListChanged(DeviceListChanged),
    KeysLow(KeysLow),
}

/// Every payload of a `to_device` frame is durably queued.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToDeviceSent {
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub r#ref: Option<String>,
    pub client_id: String,
}

/// A queued to-device payload for this device. `id` increases per recipient device.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToDeviceIn {
    pub id: String,
    pub sender_user_id: Id,
    pub sender_device_id: Id,
    pub payload: Box<serde_json::value::RawValue>,
}

/// A user's device list changed (a device was added, got its identity, or was removed).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceListChanged {
    pub user_id: Id,
    pub list_version: i64,
}

/// This device has fewer than 10 unused one-time keys on the server: upload more.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeysLow {
    pub one_time_key_count: u32,
}

/// The provider said this device's push registration is dead: register again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushInvalidated {
    pub kind: String,
}

impl ServerFrame<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ready {
    pub user_id: Id,
    pub device_id: Id,
    pub server_time: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Synced {}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sent {
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub r#ref: Option<String>,
    pub conversation_id: Id,
    pub client_id: String,
    pub message_id: Id,
    pub seq: i64,
    pub ts: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Receipt {
    pub conversation_id: Id,
    pub user_id: Id,
    pub delivered_seq: i64,
    pub read_seq: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Typing {
    pub conversation_id: Id,
    pub user_id: Id,
    pub active: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Presence {
    /// The id as it was asked about (a string that names no user is echoed as it came).
    pub user_id: String,
    pub online: bool,
    pub last_seen: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub r#ref: Option<String>,
    /// Present with `rate_limited`: how long to wait before trying again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Present with `stale_devices`: the conversation's current device epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_epoch: Option<i64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Pong {
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub r#ref: Option<String>,
}

/// Just enough of a server frame to dispatch on; clients then decode the matching part.
#[derive(Deserialize)]
pub struct FrameHead<'a> {
    #[serde(rename = "type", borrow)]
    pub ty: std::borrow::Cow<'a, str>,
    #[serde(rename = "ref", default)]
    pub r#ref: Option<String>,
}

/// WebSocket close codes of protocol version 1.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const TOO_BIG: u16 = 1009;
    pub const UNAUTHORIZED: u16 = 4001;
    pub const AUTH_TIMEOUT: u16 = 4002;
    pub const POLICY_VIOLATION: u16 = 4008;
    pub const TOO_SLOW: u16 = 4009;
    pub const DEVICE_REVOKED: u16 = 4010;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        decode_client_frame(text).unwrap_err().code
    }

    #[test]
    fn decodes_known_frames_with_ref() {
        let (f, r) = decode_client_frame(r#"{"type":"ack","conversation_id":"12","seq":3,"ref":"x"}"#).unwrap();
        assert!(matches!(f, ClientFrame::Ack { conversation_id: Id(12), seq: 3 }));
        assert_eq!(r.as_deref(), Some("x"));
    }

    #[test]
    fn tells_errors_apart() {
        assert_eq!(code("{nope"), ErrorCode::InvalidFrame);
        assert_eq!(code("[1]"), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"seq":1}"#), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"ack","conversation_id":"1"}"#), ErrorCode::InvalidFrame);
        assert_eq!(code(r#"{"type":"ack","conversation_id":1,"seq":1}"#), ErrorCode::InvalidFrame);
        let e = decode_client_frame(r#"{"type":"ack","ref":"r1"}"#).unwrap_err();
        assert_eq!(e.r#ref.as_deref(), Some("r1"));
    }

    #[test]
    fn server_frames_carry_their_type() {
        let s = ServerFrame::Pong(Pong { r#ref: Some("a".into()) }).to_json();
        assert_eq!(s, r#"{"type":"pong","ref":"a"}"#);
        let s = ServerFrame::Synced(Synced {}).to_json();
        assert_eq!(s, r#"{"type":"synced"}"#);
    }
}

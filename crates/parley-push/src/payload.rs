//! What a push says: the conversation, its latest seq and the unread count, nothing else. The
//! client wakes, connects and syncs; titles and names come from its own state.

use parley_core::ids::{ConversationId, DeviceId, Seq};
use ring::hmac;

/// A push's content-free payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// New messages in a conversation.
    Message { conversation_id: ConversationId, seq: Seq, unread_count: i64 },
    /// `POST /v1/push/test`.
    Test,
}

impl Payload {
    /// `{"v": 1, "type": "message", "conversation_id", "seq", "unread_count"}`, or
    /// `{"v": 1, "type": "test"}`.
    pub fn json(&self) -> serde_json::Value {
        match self {
            Payload::Message { conversation_id, seq, unread_count } => serde_json::json!({
                "v": 1,
                "type": "message",
                "conversation_id": conversation_id.to_string(),
                "seq": seq.0,
                "unread_count": unread_count,
            }),
            Payload::Test => serde_json::json!({ "v": 1, "type": "test" }),
        }
    }

    /// The same fields with every value a string, for FCM's `data` map (which takes strings only).
    pub fn string_map(&self) -> serde_json::Value {
        let mut map = self.json();
        if let Some(obj) = map.as_object_mut() {
            for v in obj.values_mut() {
                if !v.is_string() {
                    *v = serde_json::Value::String(v.to_string());
                }
            }
        }
        map
    }
}

/// Derives the Web Push `Topic`, APNs collapse id and FCM collapse key of a (device,
/// conversation): the same for every push of the pair, different between conversations, and
/// revealing neither id to the provider (an HMAC under a server secret).
pub struct Topics {
    key: hmac::Key,
}

impl Topics {
    pub fn new(secret: &[u8]) -> Topics {
        Topics { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// 32 base64url characters (24 bytes of the HMAC), the most RFC 8030 §5.4 allows.
    pub fn topic(&self, device: DeviceId, conversation: ConversationId) -> String {
        let mut msg = [0u8; 16];
        msg[..8].copy_from_slice(&device.0.to_be_bytes());
        msg[8..].copy_from_slice(&conversation.0.to_be_bytes());
        let tag = hmac::sign(&self.key, &msg);
        crate::b64url(&tag.as_ref()[..24])
    }
}

impl std::fmt::Debug for Topics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Topics { .. }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_stable_per_pair_short_and_opaque() {
        let t = Topics::new(b"secret");
        let a = t.topic(DeviceId(1), ConversationId(2));
        assert_eq!(a, t.topic(DeviceId(1), ConversationId(2)));
        assert_ne!(a, t.topic(DeviceId(1), ConversationId(3)));
        assert_ne!(a, t.topic(DeviceId(2), ConversationId(2)));
        assert_ne!(a, Topics::new(b"other").topic(DeviceId(1), ConversationId(2)));
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn the_payload_has_exactly_the_contract_fields() {
        let p = Payload::Message { conversation_id: ConversationId(42), seq: Seq(7), unread_count: 3 };
        assert_eq!(p.json().to_string(), r#"{"conversation_id":"42","seq":7,"type":"message","unread_count":3,"v":1}"#);
        assert_eq!(
            p.string_map().to_string(),
            r#"{"conversation_id":"42","seq":"7","type":"message","unread_count":"3","v":"1"}"#
        );
        assert_eq!(Payload::Test.json().to_string(), r#"{"type":"test","v":1}"#);
    }
}

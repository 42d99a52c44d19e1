//! System entries: the log entries the server writes about a conversation itself, as typed
//! values with one canonical JSON encoding.
//!
//! The encoding is written by hand, not derived: the bytes are stored once and then shown to
//! clients as they are, so they must not change when a dependency's map type or a field order
//! does. Keys are in alphabetical order (the order these bodies have always had on the wire) and
//! ids are decimal strings, like every id the protocol shows.

use crate::MessageKind;
use crate::ids::UserId;
use crate::model::Role;

/// How a conversation began (the body of `conversation_created`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    Direct,
    /// Every initial member, the creator (its admin) first.
    Group {
        title: String,
        user_ids: Vec<UserId>,
    },
}

/// One system entry, by kind, with its fields typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SystemEntry {
    ConversationCreated(Created),
    MembersAdded { user_ids: Vec<UserId>, by: UserId },
    MemberRemoved { user_id: UserId, by: UserId },
    MemberLeft { user_id: UserId },
    TitleChanged { title: String, by: UserId },
    RoleChanged { user_id: UserId, role: Role, by: UserId },
}

/// A stored body that is not the encoding of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {kind} body: {body}")]
pub struct MalformedEntry {
    pub kind: &'static str,
    pub body: String,
}

impl SystemEntry {
    /// `user` leaving when `by == user`, else being removed by `by`.
    pub fn removal(by: UserId, user: UserId) -> SystemEntry {
        if by == user {
            SystemEntry::MemberLeft { user_id: user }
        } else {
            SystemEntry::MemberRemoved { user_id: user, by }
        }
    }

    pub fn kind(&self) -> MessageKind {
        match self {
            SystemEntry::ConversationCreated(_) => MessageKind::ConversationCreated,
            SystemEntry::MembersAdded { .. } => MessageKind::MembersAdded,
            SystemEntry::MemberRemoved { .. } => MessageKind::MemberRemoved,
            SystemEntry::MemberLeft { .. } => MessageKind::MemberLeft,
            SystemEntry::TitleChanged { .. } => MessageKind::TitleChanged,
            SystemEntry::RoleChanged { .. } => MessageKind::RoleChanged,
        }
    }

    /// The user a `member_removed` or `member_left` entry takes out of the conversation.
    pub fn removed_user(&self) -> Option<UserId> {
        match self {
            SystemEntry::MemberRemoved { user_id, .. } | SystemEntry::MemberLeft { user_id } => Some(*user_id),
            _ => None,
        }
    }

    /// The canonical body: the exact bytes stored and shown on the wire.
    pub fn encode(&self) -> String {
        match self {
            SystemEntry::ConversationCreated(Created::Direct) => r#"{"kind":"direct"}"#.to_owned(),
            SystemEntry::ConversationCreated(Created::Group { title, user_ids }) => {
                format!(r#"{{"kind":"group","title":{},"user_ids":{}}}"#, string(title), ids(user_ids))
            }
            SystemEntry::MembersAdded { user_ids, by } => {
                format!(r#"{{"by":"{by}","user_ids":{}}}"#, ids(user_ids))
            }
            SystemEntry::MemberRemoved { user_id, by } => format!(r#"{{"by":"{by}","user_id":"{user_id}"}}"#),
            SystemEntry::MemberLeft { user_id } => format!(r#"{{"user_id":"{user_id}"}}"#),
            SystemEntry::TitleChanged { title, by } => format!(r#"{{"by":"{by}","title":{}}}"#, string(title)),
            SystemEntry::RoleChanged { user_id, role, by } => {
                format!(r#"{{"by":"{by}","role":"{}","user_id":"{user_id}"}}"#, role.as_str())
            }
        }
    }

    /// Reads a stored entry back: `Ok(None)` for the kinds clients send, an error for a system
    /// body that does not have its kind's fields.
    pub fn decode(kind: MessageKind, body: &str) -> Result<Option<SystemEntry>, MalformedEntry> {
        if !kind.is_system() {
            return Ok(None);
        }
        let bad = || MalformedEntry { kind: kind.as_str(), body: body.to_owned() };
        let v: serde_json::Value = serde_json::from_str(body).map_err(|_| bad())?;
        let id = |key: &str| v.get(key).and_then(serde_json::Value::as_str).and_then(parse_id);
        let text = |key: &str| v.get(key).and_then(serde_json::Value::as_str).map(str::to_owned);
        let id_list = |key: &str| {
            v.get(key)?.as_array()?.iter().map(|u| u.as_str().and_then(parse_id)).collect::<Option<Vec<_>>>()
        };
        let entry = match kind {
            MessageKind::ConversationCreated => match v.get("kind").and_then(serde_json::Value::as_str) {
                Some("direct") => Some(SystemEntry::ConversationCreated(Created::Direct)),
                Some("group") => (|| {
                    Some(SystemEntry::ConversationCreated(Created::Group {
                        title: text("title")?,
                        user_ids: id_list("user_ids")?,
                    }))
                })(),
                _ => None,
            },
            MessageKind::MembersAdded => {
                (|| Some(SystemEntry::MembersAdded { user_ids: id_list("user_ids")?, by: id("by")? }))()
            }
            MessageKind::MemberRemoved => {
                (|| Some(SystemEntry::MemberRemoved { user_id: id("user_id")?, by: id("by")? }))()
            }
            MessageKind::MemberLeft => id("user_id").map(|user_id| SystemEntry::MemberLeft { user_id }),
            MessageKind::TitleChanged => {
                (|| Some(SystemEntry::TitleChanged { title: text("title")?, by: id("by")? }))()
            }
            MessageKind::RoleChanged => (|| {
                let role = match v.get("role")?.as_str()? {
                    "admin" => Role::Admin,
                    "member" => Role::Member,
                    _ => return None,
                };
                Some(SystemEntry::RoleChanged { user_id: id("user_id")?, role, by: id("by")? })
            })(),
            _ => None,
        };
        entry.map(Some).ok_or_else(bad)
    }
}

/// A JSON string literal, escaped as serde_json escapes it.
fn string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A JSON array of ids as decimal strings.
fn ids(ids: &[UserId]) -> String {
    let inner: Vec<String> = ids.iter().map(|id| format!(r#""{id}""#)).collect();
    format!("[{}]", inner.join(","))
}

/// The decimal form of an id, as the protocol writes them.
fn parse_id(s: &str) -> Option<UserId> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each variant's exact bytes (those the wire has always shown: keys in alphabetical order,
    /// ids as strings), and the decoder reading them back.
    #[test]
    fn encodings_are_pinned_and_round_trip() {
        let cases = [
            (SystemEntry::ConversationCreated(Created::Direct), r#"{"kind":"direct"}"#),
            (
                SystemEntry::ConversationCreated(Created::Group {
                    title: "Team \"A\"".into(),
                    user_ids: vec![UserId(7), UserId(3)],
                }),
                r#"{"kind":"group","title":"Team \"A\"","user_ids":["7","3"]}"#,
            ),
            (SystemEntry::MembersAdded { user_ids: vec![UserId(5)], by: UserId(7) }, r#"{"by":"7","user_ids":["5"]}"#),
            (SystemEntry::MemberRemoved { user_id: UserId(5), by: UserId(7) }, r#"{"by":"7","user_id":"5"}"#),
            (SystemEntry::MemberLeft { user_id: UserId(5) }, r#"{"user_id":"5"}"#),
            (SystemEntry::TitleChanged { title: "Tëam\n2".into(), by: UserId(7) }, r#"{"by":"7","title":"Tëam\n2"}"#),
            (
                SystemEntry::RoleChanged { user_id: UserId(5), role: Role::Admin, by: UserId(7) },
                r#"{"by":"7","role":"admin","user_id":"5"}"#,
            ),
            (
                SystemEntry::RoleChanged { user_id: UserId(5), role: Role::Member, by: UserId(7) },
                r#"{"by":"7","role":"member","user_id":"5"}"#,
            ),
        ];
        for (entry, bytes) in cases {
            assert_eq!(entry.encode(), bytes);
            assert_eq!(SystemEntry::decode(entry.kind(), bytes), Ok(Some(entry)));
        }
    }

    /// The bytes are those `serde_json::json!` produced for these bodies before the encoding was
    /// written by hand (its map sorts keys), so stored logs and new entries agree.
    #[test]
    fn encoding_matches_the_json_values() {
        let title = "a \u{1} \\ / é";
        let e = SystemEntry::ConversationCreated(Created::Group {
            title: title.into(),
            user_ids: vec![UserId(1), UserId(22)],
        });
        let v = serde_json::json!({"kind": "group", "title": title, "user_ids": ["1", "22"]});
        assert_eq!(e.encode(), v.to_string());
        let e = SystemEntry::TitleChanged { title: title.into(), by: UserId(9) };
        assert_eq!(e.encode(), serde_json::json!({"title": title, "by": "9"}).to_string());
    }

    /// docs/PROTOCOL.md shows every body as this encoding writes it.
    #[test]
    fn the_protocol_document_shows_these_bytes() {
        const DOC: &str = include_str!("../../../docs/PROTOCOL.md");
        let group = Created::Group { title: "Team".into(), user_ids: vec![UserId(11), UserId(12)] };
        for e in [
            SystemEntry::ConversationCreated(Created::Direct),
            SystemEntry::ConversationCreated(group),
            SystemEntry::MembersAdded { user_ids: vec![UserId(13)], by: UserId(11) },
            SystemEntry::MemberRemoved { user_id: UserId(13), by: UserId(11) },
            SystemEntry::MemberLeft { user_id: UserId(13) },
            SystemEntry::TitleChanged { title: "Team 2".into(), by: UserId(11) },
            SystemEntry::RoleChanged { user_id: UserId(12), role: Role::Admin, by: UserId(11) },
        ] {
            let shown = format!("| `{}` ", e.kind().as_str());
            let body = format!("`{}`", e.encode());
            assert!(DOC.lines().any(|l| l.starts_with(&shown) && l.contains(&body)), "PROTOCOL.md lacks {body}");
        }
    }

    #[test]
    fn decode_refuses_what_is_not_its_kind() {
        assert_eq!(SystemEntry::decode(MessageKind::Text, r#"{"text":"hi"}"#), Ok(None));
        for (kind, body) in [
            (MessageKind::MemberLeft, r#"{"user_id":5}"#),
            (MessageKind::MemberLeft, r#"{"user_id":"-5"}"#),
            (MessageKind::MemberRemoved, r#"{"user_id":"5"}"#),
            (MessageKind::RoleChanged, r#"{"by":"7","role":"owner","user_id":"5"}"#),
            (MessageKind::ConversationCreated, r#"{"kind":"channel"}"#),
            (MessageKind::MembersAdded, r#"{"by":"7","user_ids":["5",6]}"#),
            (MessageKind::TitleChanged, "not json"),
        ] {
            assert!(SystemEntry::decode(kind, body).is_err(), "{kind:?} {body}");
        }
    }

    #[test]
    fn removal_is_leaving_when_the_actor_is_the_user() {
        assert_eq!(SystemEntry::removal(UserId(5), UserId(5)), SystemEntry::MemberLeft { user_id: UserId(5) });
        assert_eq!(
            SystemEntry::removal(UserId(7), UserId(5)),
            SystemEntry::MemberRemoved { user_id: UserId(5), by: UserId(7) }
        );
        assert_eq!(SystemEntry::removal(UserId(7), UserId(5)).removed_user(), Some(UserId(5)));
        assert_eq!(SystemEntry::TitleChanged { title: "t".into(), by: UserId(7) }.removed_user(), None);
    }
}

//! Validation of what users send: names, passwords, client ids and message bodies.

use crate::ids::{MediaId, Seq};
use serde_json::{Map, Value};

use crate::MessageKind;
use crate::limits::*;

/// Why input was refused. The server maps `TooLarge` to `payload_too_large` and the rest to
/// `bad_request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
}

fn bad(msg: impl Into<String>) -> Invalid {
    Invalid::BadRequest(msg.into())
}

/// Usernames are 3–32 of `[a-z0-9_.-]`, compared case-insensitively: returns the stored
/// (lower-case) form.
pub fn username(raw: &str) -> Result<String, Invalid> {
    let name = raw.to_ascii_lowercase();
    let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if !(USERNAME_MIN..=USERNAME_MAX).contains(&name.len()) || !ok_chars {
        return Err(bad(format!(
            "username must be {USERNAME_MIN} to {USERNAME_MAX} characters of a-z, 0-9, '_', '.', '-'"
        )));
    }
    Ok(name)
}

pub fn password(raw: &str) -> Result<(), Invalid> {
    if !(PASSWORD_MIN_BYTES..=PASSWORD_MAX_BYTES).contains(&raw.len()) {
        return Err(bad(format!("password must be {PASSWORD_MIN_BYTES} to {PASSWORD_MAX_BYTES} bytes")));
    }
    Ok(())
}

/// Display names, device names and titles: trimmed, 1 to [`NAME_MAX_CHARS`] characters, no
/// control characters.
pub fn name(what: &str, raw: &str) -> Result<String, Invalid> {
    let s = raw.trim();
    if s.is_empty() || s.chars().count() > NAME_MAX_CHARS || s.chars().any(char::is_control) {
        return Err(bad(format!("{what} must be 1 to {NAME_MAX_CHARS} printable characters")));
    }
    Ok(s.to_owned())
}

pub fn client_id(raw: &str) -> Result<(), Invalid> {
    if raw.is_empty() || raw.len() > MAX_CLIENT_ID_BYTES {
        return Err(bad(format!("client_id must be 1 to {MAX_CLIENT_ID_BYTES} bytes")));
    }
    Ok(())
}

/// A message a client may send, checked and in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidBody {
    pub kind: MessageKind,
    /// The body as it is stored and sent: canonical JSON with only the known fields.
    pub json: String,
    /// The entry an `edit`, `delete` or `reaction` refers to.
    pub target_seq: Option<Seq>,
    /// The uploads this message shows (a `media` message's `media_id`, an `encrypted` one's
    /// `media_ids`): sending it grants the conversation's members access to them.
    pub media: Vec<MediaRef>,
    /// The `device_epoch` an `encrypted` body was made for, if it names one.
    pub device_epoch: Option<i64>,
}

/// An upload a message names, with what the message claims about it (checked against the
/// store's record in the send's transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRef {
    pub id: MediaId,
    /// `None` for encrypted attachments: their plaintext type and size are the sender's secret.
    pub claimed: Option<(String, u64)>,
}

/// Checks a client's `kind` and `body` and returns the canonical body to store.
pub fn message_body(kind: &str, body: &Value) -> Result<ValidBody, Invalid> {
    let kind = match MessageKind::parse(kind) {
        Some(k) if k.is_system() => {
            return Err(bad(format!("kind `{}` is written by the server only", k.as_str())));
        }
        Some(k) => k,
        None => {
            return Err(bad(format!("unknown message kind `{}`", kind.chars().take(64).collect::<String>())));
        }
    };
    let Some(obj) = body.as_object() else {
        return Err(bad("body must be a JSON object"));
    };
    let mut out = Map::new();
    let mut target_seq = None;
    let mut media = Vec::new();
    let mut device_epoch = None;
    match kind {
        MessageKind::Text => {
            out.insert("text".into(), Value::String(text(obj, "text")?.to_owned()));
            if let Some(v) = opt_seq(obj, "reply_to_seq")? {
                out.insert("reply_to_seq".into(), v.into());
            }
            if let Some(m) = mentions(obj)? {
                out.insert("mentions".into(), m);
            }
        }
        MessageKind::Edit => {
            target_seq = Some(req_seq(obj, "target_seq")?);
            out.insert("target_seq".into(), target_seq.into());
            out.insert("text".into(), Value::String(text(obj, "text")?.to_owned()));
        }
        MessageKind::Delete => {
            target_seq = Some(req_seq(obj, "target_seq")?);
            out.insert("target_seq".into(), target_seq.into());
        }
        MessageKind::Reaction => {
            target_seq = Some(req_seq(obj, "target_seq")?);
            out.insert("target_seq".into(), target_seq.into());
            let emoji = match obj.get("emoji") {
                Some(Value::String(e)) if e.len() <= MAX_EMOJI_BYTES && !e.chars().any(char::is_control) => e,
                Some(Value::String(_)) => {
                    return Err(bad(format!("emoji must be at most {MAX_EMOJI_BYTES} bytes of printable text")));
                }
                Some(_) => return Err(bad("emoji must be a string")),
                None => return Err(bad("body.emoji is missing")),
            };
            out.insert("emoji".into(), Value::String(emoji.clone()));
        }
        MessageKind::Encrypted => {
            // Opaque to the server: every field is kept, two are required.
            for field in ["algorithm", "ciphertext"] {
                match obj.get(field) {
                    Some(Value::String(v)) if !v.is_empty() => {}
                    _ => return Err(bad(format!("body.{field} must be a non-empty string"))),
                }
            }
            media = encrypted_media(obj)?;
            device_epoch = match obj.get("device_epoch") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_i64()
                        .filter(|e| *e >= 0)
                        .ok_or_else(|| bad("body.device_epoch must be a non-negative integer"))?,
                ),
            };
            out = obj.clone();
        }
        MessageKind::Media => {
            let m = media_body(obj, &mut out)?;
            media.push(m);
        }
        other => {
            return Err(bad(format!("kind `{}` is not supported by this server yet", other.as_str())));
        }
    }
    Ok(ValidBody { kind, json: Value::Object(out).to_string(), target_seq: target_seq.map(Seq), media, device_epoch })
}

/// Most attachments one encrypted message may name.
pub const MAX_ENCRYPTED_MEDIA: usize = 32;

/// `media`: `{media_id, content_type, size, caption?, width?, height?, duration_ms?, thumbnail?,
/// blurhash?}`, copied field by field into `out`.
fn media_body(obj: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<MediaRef, Invalid> {
    let id = media_id(obj.get("media_id"), "body.media_id")?;
    out.insert("media_id".into(), Value::String(id.to_string()));
    let content_type = match obj.get("content_type") {
        Some(Value::String(s)) => crate::media::content_type(s).map_err(bad)?,
        _ => return Err(bad("body.content_type must be a MIME type string")),
    };
    out.insert("content_type".into(), Value::String(content_type.clone()));
    let size = match obj.get("size").and_then(Value::as_u64) {
        Some(n) if n >= 1 => n,
        _ => return Err(bad("body.size must be a positive integer")),
    };
    out.insert("size".into(), size.into());
    if let Some(c) = obj.get("caption").filter(|v| !v.is_null()) {
        let Value::String(c) = c else { return Err(bad("body.caption must be a string")) };
        if c.len() > MAX_TEXT_BYTES {
            return Err(Invalid::TooLarge(format!("caption is longer than {MAX_TEXT_BYTES} bytes")));
        }
        if !c.is_empty() {
            out.insert("caption".into(), Value::String(c.clone()));
        }
    }
    if let Some(n) = obj.get("name").filter(|v| !v.is_null()) {
        match n {
            Value::String(n) if !n.is_empty() && n.len() <= 255 && !n.chars().any(char::is_control) => {
                out.insert("name".into(), Value::String(n.clone()));
            }
            _ => return Err(bad("body.name must be a file name of 1 to 255 bytes")),
        }
    }
    // A photo can answer a message and its caption can name people, like a text.
    if let Some(v) = opt_seq(obj, "reply_to_seq")? {
        out.insert("reply_to_seq".into(), v.into());
    }
    if let Some(m) = mentions(obj)? {
        out.insert("mentions".into(), m);
    }
    for field in ["width", "height", "duration_ms"] {
        match obj.get(field) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64() {
                Some(n) if n <= u32::MAX as u64 * 1000 => {
                    out.insert(field.into(), n.into());
                }
                _ => return Err(bad(format!("body.{field} must be a non-negative integer"))),
            },
        }
    }
    match obj.get("thumbnail") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) => match crate::media::base64_decoded_len(t) {
            Some(n) if n <= crate::media::MAX_THUMBNAIL_BYTES => {
                out.insert("thumbnail".into(), Value::String(t.clone()));
            }
            Some(_) => {
                return Err(Invalid::TooLarge(format!(
                    "thumbnail is larger than {} bytes",
                    crate::media::MAX_THUMBNAIL_BYTES
                )));
            }
            None => return Err(bad("body.thumbnail must be base64")),
        },
        Some(_) => return Err(bad("body.thumbnail must be a base64 string")),
    }
    match obj.get("blurhash") {
        None | Some(Value::Null) => {}
        Some(Value::String(b))
            if !b.is_empty()
                && b.len() <= crate::media::MAX_BLURHASH_CHARS
                && b.bytes().all(|c| c.is_ascii_graphic()) =>
        {
            out.insert("blurhash".into(), Value::String(b.clone()));
        }
        Some(_) => return Err(bad("body.blurhash must be a short blurhash string")),
    }
    Ok(MediaRef { id, claimed: Some((content_type, size)) })
}

/// An `encrypted` body may name its attachments in the clear (`media_ids`), so the server can
/// grant access and collect them; their keys and digests stay inside the ciphertext.
fn encrypted_media(obj: &Map<String, Value>) -> Result<Vec<MediaRef>, Invalid> {
    let Some(v) = obj.get("media_ids").filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
    let Some(list) = v.as_array() else { return Err(bad("body.media_ids must be an array of media ids")) };
    if list.len() > MAX_ENCRYPTED_MEDIA {
        return Err(bad(format!("body.media_ids names at most {MAX_ENCRYPTED_MEDIA} uploads")));
    }
    let mut out: Vec<MediaRef> = Vec::with_capacity(list.len());
    for v in list {
        let id = media_id(Some(v), "body.media_ids[]")?;
        if !out.iter().any(|m| m.id == id) {
            out.push(MediaRef { id, claimed: None });
        }
    }
    Ok(out)
}

/// A media id on the wire: a string of digits.
pub fn media_id(v: Option<&Value>, field: &str) -> Result<MediaId, Invalid> {
    match v {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().map_err(|_| bad(format!("{field} is not a media id")))
        }
        _ => Err(bad(format!("{field} must be a media id string"))),
    }
}

/// `mentions`: the user ids (strings) a text names, for notifications; at most one per member of
/// the largest group, repeats dropped. Ids of non-members are kept but push nobody.
fn mentions(obj: &Map<String, Value>) -> Result<Option<Value>, Invalid> {
    let Some(v) = obj.get("mentions") else { return Ok(None) };
    let Some(list) = v.as_array() else { return Err(bad("body.mentions must be an array of user ids")) };
    if list.len() > MAX_GROUP_MEMBERS {
        return Err(bad(format!("body.mentions names at most {} users", MAX_GROUP_MEMBERS)));
    }
    let mut out: Vec<Value> = Vec::with_capacity(list.len());
    for id in list {
        match id.as_str() {
            Some(s) if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => {
                if !out.iter().any(|o| o.as_str() == Some(s)) {
                    out.push(id.clone());
                }
            }
            _ => return Err(bad("body.mentions must be an array of user id strings")),
        }
    }
    Ok(Some(Value::Array(out)))
}

fn text<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, Invalid> {
    match obj.get(field) {
        Some(Value::String(s)) if s.is_empty() => Err(bad(format!("{field} must not be empty"))),
        Some(Value::String(s)) if s.len() > MAX_TEXT_BYTES => {
            Err(Invalid::TooLarge(format!("{field} is longer than {MAX_TEXT_BYTES} bytes")))
        }
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(format!("{field} must be a string"))),
        None => Err(bad(format!("body.{field} is missing"))),
    }
}

fn req_seq(obj: &Map<String, Value>, field: &str) -> Result<i64, Invalid> {
    opt_seq(obj, field)?.ok_or_else(|| bad(format!("body.{field} is missing")))
}

fn opt_seq(obj: &Map<String, Value>, field: &str) -> Result<Option<i64>, Invalid> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if n >= 1 => Ok(Some(n)),
            _ => Err(bad(format!("{field} must be a positive integer"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usernames() {
        assert_eq!(username("Alice_1").unwrap(), "alice_1");
        for bad in ["ab", "a b c", "ümlaut", &"x".repeat(33), "semi;colon"] {
            assert!(username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn media_bodies() {
        let v = message_body(
            "media",
            &json!({"media_id": "42", "content_type": "image/PNG", "size": 10, "caption": "hi",
                    "width": 4, "height": 3, "thumbnail": "QUJD", "blurhash": "LEHV6nWB2yk8", "junk": 1}),
        )
        .unwrap();
        assert_eq!(
            v.json,
            r#"{"blurhash":"LEHV6nWB2yk8","caption":"hi","content_type":"image/png","height":3,"media_id":"42","size":10,"thumbnail":"QUJD","width":4}"#
        );
        assert_eq!(v.media, [MediaRef { id: MediaId(42), claimed: Some(("image/png".into(), 10)) }]);
        let r = message_body(
            "media",
            &json!({"media_id": "42", "content_type": "image/png", "size": 10, "reply_to_seq": 3, "mentions": ["7"]}),
        )
        .unwrap();
        assert!(r.json.contains(r#""mentions":["7"]"#) && r.json.contains(r#""reply_to_seq":3"#), "{}", r.json);
        for bad in [
            json!({"content_type": "image/png", "size": 1}),
            json!({"media_id": 42, "content_type": "image/png", "size": 1}),
            json!({"media_id": "x1", "content_type": "image/png", "size": 1}),
            json!({"media_id": "1", "content_type": "png", "size": 1}),
            json!({"media_id": "1", "content_type": "image/png", "size": 0}),
            json!({"media_id": "1", "content_type": "image/png", "size": 1, "width": -1}),
            json!({"media_id": "1", "content_type": "image/png", "size": 1, "thumbnail": "**"}),
            json!({"media_id": "1", "content_type": "image/png", "size": 1, "blurhash": "a b"}),
            json!({"media_id": "1", "content_type": "image/png", "size": 1, "reply_to_seq": 0}),
            json!({"media_id": "1", "content_type": "image/png", "size": 1, "mentions": [5]}),
        ] {
            assert!(matches!(message_body("media", &bad), Err(Invalid::BadRequest(_))), "{bad}");
        }
        let big = "A".repeat(8 * 1024 / 3 * 4 + 8);
        let r =
            message_body("media", &json!({"media_id": "1", "content_type": "image/png", "size": 1, "thumbnail": big}));
        assert!(matches!(r, Err(Invalid::TooLarge(_))));
        let e = message_body("encrypted", &json!({"algorithm": "m", "ciphertext": "c", "media_ids": ["7", "7", "8"]}))
            .unwrap();
        assert_eq!(e.media.iter().map(|m| m.id.0).collect::<Vec<_>>(), [7, 8]);
        assert!(e.media.iter().all(|m| m.claimed.is_none()));
        assert!(message_body("encrypted", &json!({"algorithm": "m", "ciphertext": "c", "media_ids": [7]})).is_err());
    }

    #[test]
    fn text_bodies() {
        let v = message_body("text", &json!({"text": "hi", "junk": 1})).unwrap();
        assert_eq!(v.json, r#"{"text":"hi"}"#);
        assert!(matches!(message_body("text", &json!({"text": ""})), Err(Invalid::BadRequest(_))));
        let big = "é".repeat(MAX_TEXT_BYTES / 2 + 1);
        assert!(matches!(message_body("text", &json!({ "text": big })), Err(Invalid::TooLarge(_))));
        let exact = "a".repeat(MAX_TEXT_BYTES);
        assert!(message_body("text", &json!({ "text": exact })).is_ok());
        assert!(message_body("text", &json!({"text": 5})).is_err());
        assert!(message_body("text", &json!("hi")).is_err());
        assert!(message_body("members_added", &json!({})).is_err());
        assert!(message_body("nope", &json!({})).is_err());
        assert!(message_body("text", &json!({"text": "a", "reply_to_seq": 0})).is_err());
    }

    #[test]
    fn edits_deletes_reactions() {
        let e = message_body("edit", &json!({"target_seq": 4, "text": "fixed"})).unwrap();
        assert_eq!(e.target_seq, Some(Seq(4)));
        assert!(message_body("edit", &json!({"text": "no target"})).is_err());
        assert!(message_body("delete", &json!({"target_seq": "4"})).is_err());
        assert_eq!(message_body("delete", &json!({"target_seq": 2})).unwrap().json, r#"{"target_seq":2}"#);
        assert!(message_body("reaction", &json!({"target_seq": 2, "emoji": ""})).is_ok(), "empty removes");
        assert!(message_body("reaction", &json!({"target_seq": 2, "emoji": "x".repeat(65)})).is_err());
        assert!(message_body("text", &json!({"text": "a"})).unwrap().target_seq.is_none());
        let enc =
            message_body("encrypted", &json!({"algorithm": "m.megolm.v1", "ciphertext": "AwgA", "session_id": "s"}));
        assert!(enc.unwrap().json.contains("session_id"), "encrypted bodies are kept whole");
        assert!(message_body("encrypted", &json!({"algorithm": "x"})).is_err());
    }
}

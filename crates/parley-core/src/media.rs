//! Media: the record the store keeps about an uploaded file, and the rules about it. The bytes
//! themselves live in a media store (`parley-media`), never in the log.

use crate::ids::{MediaId, UserId};

/// Largest `thumbnail` a media message may carry, decoded.
pub const MAX_THUMBNAIL_BYTES: usize = 8 * 1024;
/// Longest `blurhash` (a 9×9 component hash is 166 characters).
pub const MAX_BLURHASH_CHARS: usize = 200;
/// Longest `content_type`.
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;
/// Default largest upload (`--media-max-bytes`).
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// How long an upload or download URL stays valid. The contract caps uploads at 15 minutes.
pub const URL_TTL_MS: i64 = 15 * 60 * 1000;
/// An upload no message references is removed this long after it was created.
pub const ORPHAN_AFTER_MS: i64 = 24 * 60 * 60 * 1000;

/// Where an upload is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaState {
    /// Created; the client may be uploading.
    Pending,
    /// Completed: the stored object's size and digest were checked.
    Ready,
    /// Chosen by the collector: its object is being removed and nothing may reference it.
    Doomed,
}

impl MediaState {
    pub fn as_i16(self) -> i16 {
        match self {
            MediaState::Pending => 0,
            MediaState::Ready => 1,
            MediaState::Doomed => 2,
        }
    }

    pub fn from_i16(v: i16) -> MediaState {
        match v {
            0 => MediaState::Pending,
            1 => MediaState::Ready,
            _ => MediaState::Doomed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MediaState::Pending => "pending",
            MediaState::Ready => "ready",
            MediaState::Doomed => "deleted",
        }
    }
}

/// What the store knows about one upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    pub id: MediaId,
    pub uploader: UserId,
    pub size: u64,
    pub content_type: String,
    pub sha256: [u8; 32],
    pub state: MediaState,
    pub created_at: i64,
}

/// Checks a MIME type: `type/subtype` with optional parameters, printable ASCII, bounded. It is
/// echoed as `Content-Type` on download, so nothing that could split a header gets through.
pub fn content_type(raw: &str) -> Result<String, &'static str> {
    if raw.is_empty() || raw.len() > MAX_CONTENT_TYPE_BYTES {
        return Err("content_type must be 1 to 255 bytes");
    }
    if !raw.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err("content_type must be printable ASCII");
    }
    // A comma could make a browser read a second type (`image/png;a=b, text/html`); quotes and
    // backslashes are never needed in the types clients send.
    if raw.bytes().any(|b| matches!(b, b',' | b'"' | b'\\')) {
        return Err("content_type must not contain a comma, quote or backslash");
    }
    let essence = raw.split(';').next().unwrap_or("").trim();
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
    match essence.split_once('/') {
        Some((t, s)) if token(t) && token(s) => Ok(raw.trim().to_ascii_lowercase()),
        _ => Err("content_type must be a MIME type such as image/jpeg"),
    }
}

/// Whether a browser may show a type inline without it being able to run script: images (SVG,
/// which can carry script, excepted), audio and video. Anything else is served as an attachment.
pub fn inline_safe(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    (essence.starts_with("image/") && essence != "image/svg+xml")
        || essence.starts_with("audio/")
        || essence.starts_with("video/")
}

/// How many bytes a standard or URL-safe base64 string decodes to, or `None` when it is not
/// base64. Lets validation bound a thumbnail without decoding it.
pub fn base64_decoded_len(s: &str) -> Option<usize> {
    let body = s.trim_end_matches('=');
    let padding = s.len() - body.len();
    if padding > 2 || !body.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/-_".contains(&b)) {
        return None;
    }
    if body.len() % 4 == 1 || (padding > 0 && !s.len().is_multiple_of(4)) {
        return None;
    }
    Some(body.len() * 3 / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(content_type("image/JPEG").unwrap(), "image/jpeg");
        assert_eq!(content_type("audio/webm; codecs=opus").unwrap(), "audio/webm; codecs=opus");
        for bad in
            ["", "image", "image/", "/jpeg", "text/plain\r\nX-Evil: 1", "a/b c", "ü/x", "image/png;a=b, text/html"]
        {
            assert!(content_type(bad).is_err(), "{bad:?}");
        }
        assert!(content_type(&format!("a/{}", "b".repeat(300))).is_err());
    }

    #[test]
    fn only_media_types_show_inline() {
        assert!(inline_safe("image/png") && inline_safe("audio/webm; codecs=opus") && inline_safe("video/mp4"));
        assert!(!inline_safe("image/svg+xml") && !inline_safe("text/html") && !inline_safe("application/pdf"));
    }

    #[test]
    fn base64_lengths() {
        assert_eq!(base64_decoded_len(""), Some(0));
        assert_eq!(base64_decoded_len("QQ=="), Some(1));
        assert_eq!(base64_decoded_len("QUI="), Some(2));
        assert_eq!(base64_decoded_len("QUJD"), Some(3));
        assert_eq!(base64_decoded_len("QUJDRA"), Some(4));
        assert_eq!(base64_decoded_len("QUJDR"), None);
        assert_eq!(base64_decoded_len("QQ=*"), None);
        assert_eq!(base64_decoded_len("QQ==="), None);
    }

    #[test]
    fn states_round_trip() {
        for s in [MediaState::Pending, MediaState::Ready, MediaState::Doomed] {
            assert_eq!(MediaState::from_i16(s.as_i16()), s);
        }
    }
}

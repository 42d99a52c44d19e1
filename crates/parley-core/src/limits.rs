//! The limits of protocol version 1, in one place.

/// Largest group, counting the creator.
pub const MAX_GROUP_MEMBERS: usize = 1024;
/// Largest `text` of a text message, in UTF-8 bytes.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// Largest whole client frame; larger ones get `payload_too_large` and the socket stays open.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Above this the server closes the socket with 1009 instead of reading the frame.
pub const MAX_WS_MESSAGE_BYTES: usize = 1024 * 1024;
/// Longest `client_id`, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 128;
pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 32;
pub const PASSWORD_MIN_BYTES: usize = 8;
pub const PASSWORD_MAX_BYTES: usize = 1024;
/// Longest display name, device name or group title, in characters.
pub const NAME_MAX_CHARS: usize = 128;
/// History pages: default and largest `limit`.
pub const HISTORY_DEFAULT_LIMIT: u32 = 50;
pub const HISTORY_MAX_LIMIT: u32 = 200;
/// Groups up to this size get live `receipt` frames and a per-member receipts listing.
pub const RECEIPTS_LIVE_MAX_MEMBERS: i64 = 32;
/// Longest reaction, in UTF-8 bytes (an emoji with modifiers fits many times over).
pub const MAX_EMOJI_BYTES: usize = 64;

//! Push notifications as data and rules: registrations, per-member notification settings, and
//! who is pushed for which message. No I/O: the store applies [`decide`] inside the message's own
//! commit, the push worker applies [`still_due`] just before a push leaves.

use crate::MessageKind;
use crate::ids::*;

/// Which provider a registration goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PushKind {
    WebPush,
    UnifiedPush,
    Apns,
    Fcm,
}

impl PushKind {
    pub const ALL: [PushKind; 4] = [PushKind::WebPush, PushKind::UnifiedPush, PushKind::Apns, PushKind::Fcm];

    pub fn as_str(self) -> &'static str {
        match self {
            PushKind::WebPush => "webpush",
            PushKind::UnifiedPush => "unifiedpush",
            PushKind::Apns => "apns",
            PushKind::Fcm => "fcm",
        }
    }

    pub fn parse(s: &str) -> Option<PushKind> {
        PushKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Web Push and UnifiedPush are the same requests to an endpoint the client names.
    pub fn is_web(self) -> bool {
        matches!(self, PushKind::WebPush | PushKind::UnifiedPush)
    }
}

/// Where a registration's pushes go: an endpoint with the subscription's keys (Web Push,
/// UnifiedPush) or a provider's device token (APNs, FCM).
#[derive(Clone, PartialEq, Eq)]
pub enum PushAddress {
    Web { endpoint: String, p256dh: String, auth: String },
    Token { token: String, sandbox: bool },
}

/// Tokens and endpoints are secrets of the device: they never reach a log.
impl std::fmt::Debug for PushAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushAddress::Web { .. } => f.write_str("Web { .. }"),
            PushAddress::Token { sandbox, .. } => write!(f, "Token {{ sandbox: {sandbox}, .. }}"),
        }
    }
}

/// The provider's last refusal of a push to a registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushFailure {
    pub at: i64,
    /// The provider's HTTP status, or 0 when no answer came (connection refused, timeout).
    pub status: u16,
    pub reason: String,
}

/// One device's push registration and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushRegistration {
    pub device_id: DeviceId,
    pub user_id: UserId,
    pub kind: PushKind,
    pub address: PushAddress,
    pub registered_at: i64,
    pub last_success_at: Option<i64>,
    pub last_error: Option<PushFailure>,
    /// When a provider said the registration is dead; it is never pushed again.
    pub invalidated_at: Option<i64>,
}

/// How much of a conversation reaches a member's devices as pushes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Notify {
    #[default]
    All,
    Mentions,
    None,
}

impl Notify {
    pub fn as_str(self) -> &'static str {
        match self {
            Notify::All => "all",
            Notify::Mentions => "mentions",
            Notify::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Notify> {
        [Notify::All, Notify::Mentions, Notify::None].into_iter().find(|n| n.as_str() == s)
    }
}

/// A member's notification settings for one conversation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberSettings {
    pub muted_until: Option<i64>,
    pub notify: Notify,
}

/// A change to [`MemberSettings`]: `None` leaves a field as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SettingsPatch {
    pub muted_until: Option<Option<i64>>,
    pub notify: Option<Notify>,
}

impl MemberSettings {
    pub fn apply(self, p: SettingsPatch) -> MemberSettings {
        MemberSettings {
            muted_until: p.muted_until.unwrap_or(self.muted_until),
            notify: p.notify.unwrap_or(self.notify),
        }
    }
}

/// Why a push was not sent; the label of the `suppressed` metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Suppressed {
    /// The conversation is muted, or set to `none`.
    Muted,
    /// Set to `mentions` and the message does not name the member.
    NotMentioned,
    DoNotDisturb,
    /// The device had a WebSocket open.
    Online,
    /// The device had already acknowledged the seq.
    Acknowledged,
    /// The user had read it on some device.
    Read,
}

impl Suppressed {
    pub fn as_str(self) -> &'static str {
        match self {
            Suppressed::Muted => "muted",
            Suppressed::NotMentioned => "not_mentioned",
            Suppressed::DoNotDisturb => "dnd",
            Suppressed::Online => "online",
            Suppressed::Acknowledged => "acknowledged",
            Suppressed::Read => "read",
        }
    }
}

/// Only content pushes; receipts, typing, presence, edits, reactions and system entries never do.
pub fn pushes(kind: MessageKind) -> bool {
    matches!(kind, MessageKind::Text | MessageKind::Media | MessageKind::Encrypted)
}

/// One recipient of a message, as the store sees them at commit.
#[derive(Clone, Copy, Debug)]
pub struct Recipient {
    pub user: UserId,
    pub settings: MemberSettings,
    pub dnd_until: Option<i64>,
}

/// Whether `r`'s devices are pushed for a message from `sender` (never for one's own messages;
/// the caller passes only pushable kinds and other users). `mentioned` says whether the message
/// body names `r.user` in `mentions`.
pub fn decide(r: &Recipient, mentioned: bool, now: i64) -> Result<(), Suppressed> {
    if r.settings.notify == Notify::None || r.settings.muted_until.is_some_and(|t| t > now) {
        return Err(Suppressed::Muted);
    }
    if r.settings.notify == Notify::Mentions && !mentioned {
        return Err(Suppressed::NotMentioned);
    }
    if r.dnd_until.is_some_and(|t| t > now) {
        return Err(Suppressed::DoNotDisturb);
    }
    Ok(())
}

/// What the push worker knows of a due push just before it leaves.
#[derive(Clone, Copy, Debug)]
pub struct Standing {
    pub seq: Seq,
    pub online: bool,
    /// The device's delivery cursor in the conversation.
    pub acknowledged: Seq,
    /// The user's read pointer.
    pub read: Seq,
}

/// Whether a due push still goes out: not to a device that is connected (it has the message
/// live) or has acknowledged it, nor when the user has read it elsewhere.
pub fn still_due(s: &Standing) -> Result<(), Suppressed> {
    if s.online {
        Err(Suppressed::Online)
    } else if s.read >= s.seq {
        Err(Suppressed::Read)
    } else if s.acknowledged >= s.seq {
        Err(Suppressed::Acknowledged)
    } else {
        Ok(())
    }
}

/// The users a message body names in `mentions` (a `text` or `media` body's list of user id
/// strings);
/// anything else, or a malformed list, names nobody.
pub fn mentions(kind: MessageKind, body: &str) -> Vec<UserId> {
    if !matches!(kind, MessageKind::Text | MessageKind::Media) || !body.contains("\"mentions\"") {
        return Vec::new();
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else { return Vec::new() };
    v.get("mentions")
        .and_then(|m| m.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str()?.parse().ok()).map(UserId).collect())
        .unwrap_or_default()
}

/// How long a failed push waits before its `attempt`-th retry (1-based): exponential from one
/// second, capped at ten minutes, or the provider's `Retry-After` when it gave one (never less
/// than a second).
pub fn retry_delay_ms(attempt: u32, retry_after_ms: Option<u64>) -> u64 {
    if let Some(ms) = retry_after_ms {
        return ms.clamp(1_000, 3_600_000);
    }
    1_000u64.saturating_mul(1 << attempt.saturating_sub(1).min(10)).min(600_000)
}

/// Retries of one push before it is given up (about a day with the delays above).
pub const MAX_ATTEMPTS: u32 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn r(settings: MemberSettings, dnd: Option<i64>) -> Recipient {
        Recipient { user: UserId(7), settings, dnd_until: dnd }
    }

    #[test]
    fn muted_mentions_and_dnd() {
        let all = MemberSettings::default();
        assert_eq!(decide(&r(all, None), false, NOW), Ok(()));
        let muted = MemberSettings { muted_until: Some(NOW + 1), notify: Notify::All };
        assert_eq!(decide(&r(muted, None), true, NOW), Err(Suppressed::Muted));
        let expired = MemberSettings { muted_until: Some(NOW), notify: Notify::All };
        assert_eq!(decide(&r(expired, None), false, NOW), Ok(()));
        let none = MemberSettings { muted_until: None, notify: Notify::None };
        assert_eq!(decide(&r(none, None), true, NOW), Err(Suppressed::Muted));
        let mentions = MemberSettings { muted_until: None, notify: Notify::Mentions };
        assert_eq!(decide(&r(mentions, None), false, NOW), Err(Suppressed::NotMentioned));
        assert_eq!(decide(&r(mentions, None), true, NOW), Ok(()));
        assert_eq!(decide(&r(all, Some(NOW + 5)), false, NOW), Err(Suppressed::DoNotDisturb));
        assert_eq!(decide(&r(all, Some(NOW - 5)), false, NOW), Ok(()));
    }

    #[test]
    fn standing_at_send_time() {
        let s = Standing { seq: Seq(5), online: false, acknowledged: Seq(4), read: Seq(3) };
        assert_eq!(still_due(&s), Ok(()));
        assert_eq!(still_due(&Standing { online: true, ..s }), Err(Suppressed::Online));
        assert_eq!(still_due(&Standing { acknowledged: Seq(5), ..s }), Err(Suppressed::Acknowledged));
        assert_eq!(still_due(&Standing { read: Seq(9), ..s }), Err(Suppressed::Read));
    }

    #[test]
    fn only_content_pushes() {
        let pushing: Vec<_> = MessageKind::ALL.into_iter().filter(|&k| pushes(k)).collect();
        assert_eq!(pushing, [MessageKind::Text, MessageKind::Media, MessageKind::Encrypted]);
    }

    #[test]
    fn mentions_are_read_from_text_bodies_only() {
        let body = r#"{"text":"hi @bob","mentions":["12","x","34"]}"#;
        assert_eq!(mentions(MessageKind::Text, body), [UserId(12), UserId(34)]);
        assert!(mentions(MessageKind::Encrypted, body).is_empty());
        assert!(mentions(MessageKind::Text, r#"{"text":"mentions"}"#).is_empty());
        assert!(mentions(MessageKind::Text, r#"{"text":"a","mentions":"12"}"#).is_empty());
    }

    #[test]
    fn retries_back_off_and_honour_retry_after() {
        assert_eq!(retry_delay_ms(1, None), 1_000);
        assert_eq!(retry_delay_ms(2, None), 2_000);
        assert_eq!(retry_delay_ms(5, None), 16_000);
        assert_eq!(retry_delay_ms(40, None), 600_000);
        assert_eq!(retry_delay_ms(1, Some(2_500)), 2_500);
        assert_eq!(retry_delay_ms(1, Some(0)), 1_000);
    }
}

//! Domain records: what the store keeps and returns. The server converts these to wire types.

use crate::MessageKind;
use crate::ids::*;
use crate::system::SystemEntry;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    pub created_at: i64,
}

/// A user with the password hash, for login only.
#[derive(Clone, Debug)]
pub struct UserCredentials {
    pub user: User,
    pub password_hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub id: DeviceId,
    pub user_id: UserId,
    pub name: String,
    pub created_at: i64,
    pub last_active_at: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConversationKind {
    Direct,
    Group,
}

impl ConversationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Direct => "direct",
            ConversationKind::Group => "group",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(ConversationKind::Direct),
            "group" => Some(ConversationKind::Group),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Role {
        if s == "admin" { Role::Admin } else { Role::Member }
    }
}

/// One entry of a conversation's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub conversation_id: ConversationId,
    pub seq: Seq,
    pub message_id: MessageId,
    pub sender_id: UserId,
    pub sender_device_id: Option<DeviceId>,
    pub client_id: Option<String>,
    pub ts: i64,
    pub kind: MessageKind,
    /// Canonical JSON of the body.
    pub body: String,
    /// The body of a system entry, typed (`None` for the kinds clients send): what the server
    /// acts on, so nothing above the store parses `body` again.
    pub system: Option<SystemEntry>,
}

/// A conversation as one member sees it.
#[derive(Clone, Debug)]
pub struct ConversationView {
    pub id: ConversationId,
    pub kind: ConversationKind,
    pub title: Option<String>,
    pub created_at: i64,
    /// The last seq this member may see (the conversation's last seq, or the entry that removed
    /// them).
    pub last_seq: Seq,
    pub last_message: Option<Message>,
    pub unread_count: i64,
    pub read_seq: Seq,
    pub delivered_seq: Seq,
    pub members_count: i64,
    pub members: Option<Vec<MemberView>>,
    /// This member's notification settings.
    pub settings: crate::push::MemberSettings,
    /// Members send only `encrypted` (and `delete`) messages; set at creation.
    pub encrypted: bool,
    /// Changes whenever a member joins or leaves or a member's device list changes.
    pub device_epoch: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    pub user_id: UserId,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub read_seq: Seq,
    pub delivered_seq: Seq,
}

/// A member's delivery and read pointers after an `ack` or `read` moved them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiptChange {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub delivered_seq: Seq,
    pub read_seq: Seq,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptSummary {
    pub members_count: i64,
    pub delivered_count: i64,
    pub read_count: i64,
    /// Listed for conversations of up to [`crate::limits::RECEIPTS_LIVE_MAX_MEMBERS`] members.
    pub members: Option<Vec<(UserId, bool, bool)>>,
}

/// When a user was (or is) a member of a conversation: they may see seqs in
/// `joined_seq..=left_seq` (open-ended while a member).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberWindow {
    pub user_id: UserId,
    pub joined_seq: Seq,
    pub left_seq: Option<Seq>,
}

impl MemberWindow {
    pub fn sees(&self, seq: Seq) -> bool {
        seq >= self.joined_seq && self.left_seq.is_none_or(|l| seq <= l)
    }
}

/// An account made in bulk (admin tooling): the user and one signed-in device.
#[derive(Clone, Debug)]
pub struct NewAccount {
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub device_name: String,
    pub token_hash: [u8; 32],
}

/// What presence needs to know about a user from storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceRecord {
    pub user_id: UserId,
    /// When their last device went away, as last written.
    pub last_seen: Option<i64>,
    /// Whether they show `last_seen` to others (and so see others').
    pub last_seen_visible: bool,
}

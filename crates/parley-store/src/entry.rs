//! What every backend appends to a conversation's log, and a member's window on it: the
//! vocabulary the backends share (not used above the store).

use parley_core::MessageKind;
use parley_core::ids::*;
use parley_core::model::{ConversationKind, Role};
use parley_core::rules::Standing;
use parley_core::system::SystemEntry;

/// A new log entry, before it has a seq.
pub struct Entry {
    pub conv: ConversationId,
    pub sender: UserId,
    pub device: Option<DeviceId>,
    pub client_id: Option<String>,
    pub kind: MessageKind,
    pub body: String,
    pub target_seq: Option<Seq>,
    /// The typed body of a system entry, kept with the stored one for the event.
    pub system: Option<SystemEntry>,
}

impl Entry {
    /// A system entry: written by the server on behalf of `actor`, in its canonical encoding.
    pub fn system(conv: ConversationId, actor: UserId, entry: SystemEntry) -> Entry {
        Entry {
            conv,
            sender: actor,
            device: None,
            client_id: None,
            kind: entry.kind(),
            body: entry.encode(),
            target_seq: None,
            system: Some(entry),
        }
    }
}

/// The typed body of a stored entry of `kind`. Bodies are written by the server, so one that does
/// not decode is damage; it reads as no system entry rather than making the page it is on
/// unreadable (the server shows such a body as it is stored, as it did before).
pub fn system_of(kind: MessageKind, body: &str) -> Option<SystemEntry> {
    SystemEntry::decode(kind, body).ok().flatten()
}

/// A user's membership row and the conversation it is in.
pub struct Window {
    pub joined: i64,
    pub left: Option<i64>,
    /// The conversation's last seq.
    pub last: i64,
    pub role: Role,
    pub kind: ConversationKind,
    pub encrypted: bool,
    pub device_epoch: i64,
}

impl Window {
    /// What the member is, for the rules.
    pub fn standing(&self) -> Standing {
        Standing { kind: self.kind, role: self.role }
    }

    /// The last seq this member may see.
    pub fn upto(&self) -> i64 {
        self.left.unwrap_or(self.last)
    }
}

/// The body an `encrypted` message keeps once deleted: its ciphertext is wiped from the store
/// (the delete entry says what happened; the data-lifecycle work erases every kind's body).
pub const WIPED_CIPHERTEXT: &str = r#"{"algorithm":"deleted","ciphertext":"","deleted":true}"#;

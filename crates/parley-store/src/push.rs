//! The push queue's records: what a backend hands the push worker and what the worker reports
//! back. The queue holds at most one row per (device, conversation): a pending seq that later
//! messages raise (coalescing), the time it is due, and the end of the window opened by the last
//! push that went out.
//!
//! Backends write the rows inside the commit of the message that causes them (so a `sent`
//! message's push survives `kill -9`), applying [`parley_core::push::decide`] to each member with
//! a live registration. Workers claim due rows with a lease, so in a cluster exactly one node
//! sends each push and a dead node's rows are taken over when its lease runs out.

use parley_core::ids::*;
use parley_core::push::{PushFailure, PushRegistration, Suppressed};

/// A due push, claimed by one worker until `lease` runs out.
#[derive(Clone, Debug)]
pub struct PushJob {
    pub conversation_id: ConversationId,
    /// The latest seq it covers.
    pub seq: Seq,
    /// When the earliest message it covers was committed (for the latency metric).
    pub queued_at: i64,
    /// Messages merged into it after the first.
    pub merged: u32,
    /// Failed attempts so far.
    pub attempts: u32,
    pub registration: PushRegistration,
    /// The device's delivery cursor in the conversation.
    pub acknowledged: Seq,
    /// The user's read pointer in the conversation.
    pub read: Seq,
    /// Content messages from others after the read pointer (capped at 999).
    pub unread_count: i64,
}

impl PushJob {
    pub fn device_id(&self) -> DeviceId {
        self.registration.device_id
    }
}

/// What became of a claimed push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The provider took it; merging continues until `window_end`.
    Sent { at: i64, window_end: i64 },
    /// Not needed any more (see [`parley_core::push::still_due`]).
    Suppressed,
    /// Held back by the per-device cap until `due_at`; not a failure.
    Deferred { due_at: i64 },
    /// A transient failure (429, 5xx, no answer): try again at `due_at`.
    Retry { due_at: i64, failure: PushFailure },
    /// A permanent refusal, or retries exhausted: dropped.
    Failed { failure: PushFailure },
    /// The provider says the registration is dead: it is invalidated, unless the device
    /// registered again after the push was claimed.
    Invalidated { failure: PushFailure },
}

/// A worker's report on one claimed push.
#[derive(Clone, Debug)]
pub struct PushDone {
    pub device_id: DeviceId,
    pub conversation_id: ConversationId,
    /// The seq that was claimed: a row that moved past it meanwhile stays pending.
    pub seq: Seq,
    /// The registration the push went to (an invalidation of an older one is ignored).
    pub registered_at: i64,
    pub outcome: PushOutcome,
}

/// Dropped list bound for unread counts in a payload.
pub const UNREAD_CAP: i64 = 999;

/// What a commit decided for the devices its messages could push: how many pushes it queued and
/// how many the members' settings held back, by reason (for the `suppressed` metric; the push
/// worker counts the reasons it finds later).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushDecisions {
    pub queued: u32,
    pub muted: u32,
    pub not_mentioned: u32,
    pub dnd: u32,
}

impl PushDecisions {
    pub fn count(&mut self, decision: Result<(), Suppressed>) {
        match decision {
            Ok(()) => self.queued += 1,
            Err(Suppressed::Muted) => self.muted += 1,
            Err(Suppressed::NotMentioned) => self.not_mentioned += 1,
            Err(Suppressed::DoNotDisturb) => self.dnd += 1,
            // Decided by the worker, never at commit.
            Err(Suppressed::Online | Suppressed::Acknowledged | Suppressed::Read) => {}
        }
    }

    /// The suppressions by reason.
    pub fn suppressed(&self) -> [(Suppressed, u32); 3] {
        [
            (Suppressed::Muted, self.muted),
            (Suppressed::NotMentioned, self.not_mentioned),
            (Suppressed::DoNotDisturb, self.dnd),
        ]
    }
}

//! Snowflake-style 64-bit ids: time-ordered, unique across the nodes of a deployment.
//!
//! Layout (from the top): 1 zero bit, 41 bits of milliseconds since [`EPOCH_MS`], 10 bits of
//! node id, 12 bits of sequence within the millisecond. That lasts until 2093 and gives each node
//! 4,096 ids per millisecond; past that the generator borrows from the next millisecond, so ids
//! stay unique and increasing even if the wall clock steps back.

use std::fmt;
use std::sync::Mutex;

/// Declares an id type: an `i64` that only converts explicitly, so ids of different things
/// cannot be swapped by accident (`ack(device, user, ..)` with the two reversed does not compile).
/// Storage and the wire see the number (`.0` / [`From`]); everything between sees the type.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }
    };
}

id_type!(
    /// An account.
    UserId
);
id_type!(
    /// One signed-in device of an account (a token belongs to exactly one).
    DeviceId
);
id_type!(
    /// A direct conversation or a group.
    ConversationId
);
id_type!(
    /// A log entry, unique across conversations (its position in its log is its `seq`).
    MessageId
);
id_type!(
    /// An uploaded file (photo, voice note, video, document), stored outside the log.
    MediaId
);

/// A position in one conversation's log: entries are numbered 1, 2, 3, … with no gaps, and
/// `Seq(0)` means "before the first entry" (a cursor that has seen nothing). A distance
/// between two positions is a plain count (`Seq - Seq = i64`); a position moved by a count stays
/// a position (`Seq + i64`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Seq(pub i64);

impl Seq {
    /// Before the first entry.
    pub const ZERO: Seq = Seq(0);

    /// The entry after this one.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Seq> for i64 {
    fn from(s: Seq) -> i64 {
        s.0
    }
}

impl std::ops::Add<i64> for Seq {
    type Output = Seq;

    fn add(self, n: i64) -> Seq {
        Seq(self.0 + n)
    }
}

impl std::ops::Sub<i64> for Seq {
    type Output = Seq;

    fn sub(self, n: i64) -> Seq {
        Seq(self.0 - n)
    }
}

impl std::ops::Sub for Seq {
    type Output = i64;

    fn sub(self, other: Seq) -> i64 {
        self.0 - other.0
    }
}

/// 2024-01-01T00:00:00Z.
pub const EPOCH_MS: i64 = 1_704_067_200_000;
const NODE_BITS: u32 = 10;
const SEQ_BITS: u32 = 12;
const MAX_SEQ: i64 = (1 << SEQ_BITS) - 1;

#[derive(Debug)]
pub struct IdGen {
    node: i64,
    /// (last millisecond used, sequence within it)
    state: Mutex<(i64, i64)>,
}

impl IdGen {
    pub fn new(node: u16) -> Self {
        IdGen { node: i64::from(node) & ((1 << NODE_BITS) - 1), state: Mutex::new((0, 0)) }
    }

    pub fn next(&self) -> i64 {
        let now = crate::now_ms() - EPOCH_MS;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, seq) = *st;
        let (ms, seq) = if now > last {
            (now, 0)
        } else if seq < MAX_SEQ {
            (last, seq + 1)
        } else {
            (last + 1, 0)
        };
        *st = (ms, seq);
        (ms << (NODE_BITS + SEQ_BITS)) | (self.node << SEQ_BITS) | seq
    }

    /// Makes every later id larger than `id`, e.g. the largest id already stored, so that a
    /// restart after the clock stepped back cannot reuse an id.
    pub fn observe(&self, id: i64) {
        let ms = id >> (NODE_BITS + SEQ_BITS);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if ms > st.0 {
            *st = (ms, MAX_SEQ);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_and_positive() {
        let g = IdGen::new(3);
        let mut last = 0;
        for _ in 0..20_000 {
            let id = g.next();
            assert!(id > last && id > 0);
            last = id;
        }
    }

    #[test]
    fn observe_moves_past_a_future_id() {
        let g = IdGen::new(1);
        let future = (crate::now_ms() - EPOCH_MS + 60_000) << 22;
        g.observe(future);
        assert!(g.next() > future);
    }
}

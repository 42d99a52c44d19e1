//! Ids on the wire: 64-bit integers carried as JSON strings so JavaScript keeps them exact.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An opaque id as the protocol carries it: a decimal string on the wire, an `i64` in the server.
///
/// Parsing is lenient on purpose: any JSON string is accepted, and one that is not a valid id
/// becomes [`Id::UNKNOWN`], which names nothing. A client poking at `"conversation_id": "nope"`
/// then gets the same answer as for any conversation it is not in (`not_member`/`not_found`),
/// rather than an error that tells ids and non-ids apart. A non-string is still a type error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub i64);

impl Id {
    /// The id no entity ever has (the server's ids are positive).
    pub const UNKNOWN: Id = Id(0);

    /// Parses the decimal form; anything else is [`Id::UNKNOWN`].
    pub fn parse(s: &str) -> Id {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Id::UNKNOWN;
        }
        s.parse::<i64>().map(Id).unwrap_or(Id::UNKNOWN)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<i64> for Id {
    fn from(v: i64) -> Self {
        Id(v)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // itoa-style formatting without an allocation.
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                Ok(Id::parse(v))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_string() {
        let s = serde_json::to_string(&Id(9_007_199_254_740_993)).unwrap();
        assert_eq!(s, "\"9007199254740993\"");
        assert_eq!(serde_json::from_str::<Id>(&s).unwrap(), Id(9_007_199_254_740_993));
    }

    #[test]
    fn junk_is_unknown_but_numbers_are_type_errors() {
        assert_eq!(serde_json::from_str::<Id>("\"abc\"").unwrap(), Id::UNKNOWN);
        assert_eq!(serde_json::from_str::<Id>("\"-5\"").unwrap(), Id::UNKNOWN);
        assert_eq!(serde_json::from_str::<Id>("\"99999999999999999999\"").unwrap(), Id::UNKNOWN);
        assert!(serde_json::from_str::<Id>("5").is_err());
    }
}

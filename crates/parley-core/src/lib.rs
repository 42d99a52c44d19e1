//! Parley's domain: ids, limits, validation of what users send, and the domain records the
//! store returns. No I/O and no wire types live here.

pub mod histogram;
pub mod ids;
pub mod kind;
pub mod limits;
pub mod media;
pub mod model;
pub mod push;
pub mod rules;
pub mod system;
pub mod validate;

pub use kind::MessageKind;

/// Milliseconds since the Unix epoch, the protocol's unit for every timestamp.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

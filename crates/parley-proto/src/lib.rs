//! Parley's wire types: WebSocket frames, REST bodies and error codes (protocol version 1).
//!
//! This is the only crate that derives `Serialize`/`Deserialize` for the wire. It does no I/O and
//! knows nothing of storage; the server converts its domain types into these at the edge, so the
//! wire format never changes by accident. docs/PROTOCOL.md is the human-readable contract and a
//! test in this crate fails when the two drift apart.

pub mod error;
pub mod frames;
pub mod id;
pub mod rest;
pub mod types;

pub use error::ErrorCode;
pub use id::Id;
pub use types::{Conversation, Member, Message};

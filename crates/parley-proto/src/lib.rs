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
pub use types::{Conversation, ConversationSettings, Member, Message};

#[cfg(test)]
mod doc_drift {
    //! Fails when docs/PROTOCOL.md and this crate drift apart: every error code, client frame
    //! type, server frame type and close code defined here must appear in the document.

    const DOC: &str = include_str!("../../../docs/PROTOCOL.md");

    #[test]
    fn every_wire_name_is_documented() {
        let mut missing = Vec::new();
        for code in crate::ErrorCode::ALL {
            if !DOC.contains(&format!("`{}`", code.as_str())) {
                missing.push(code.as_str().to_owned());
            }
        }
        let named = |ty: &str| DOC.contains(&format!("`{ty}`")) || DOC.contains(&format!("\"type\": \"{ty}\""));
        for ty in crate::frames::CLIENT_TYPES {
            if !named(ty) {
                missing.push(ty.to_owned());
            }
        }
        for ty in [
            "ready",
            "synced",
            "message",
            "sent",
            "receipt",
            "typing",
            "presence",
            "conversation",
            "error",
            "pong",
            "to_device_sent",
            "device_list_changed",
            "keys_low",
        ] {
            if !named(ty) {
                missing.push(ty.to_owned());
            }
        }
        use crate::frames::close::*;
        for code in [GOING_AWAY, TOO_BIG, UNAUTHORIZED, AUTH_TIMEOUT, POLICY_VIOLATION, TOO_SLOW, DEVICE_REVOKED] {
            if !DOC.contains(&code.to_string()) {
                missing.push(code.to_string());
            }
        }
        assert!(missing.is_empty(), "docs/PROTOCOL.md does not mention: {missing:?}");
    }
}

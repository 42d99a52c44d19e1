//! What both backends share about media: the rule a send naming an upload follows, and the
//! usage the daily budget is checked against.

use parley_core::validate::MediaRef;

use crate::StoreError;

/// Checks an upload a send names against what the store found (`size`, `content_type` of a
/// ready upload of the sender's, or `None`). A missing, unfinished or someone else's upload is
/// refused alike, so a sender learns nothing about others' uploads; a `media` body must
/// describe it as it is.
pub fn check_ref(m: &MediaRef, found: Option<(u64, String)>) -> Result<(), StoreError> {
    let Some((size, content_type)) = found else {
        return Err(StoreError::Invalid(format!("media {} is not a completed upload of yours", m.id)));
    };
    match &m.claimed {
        Some((ct, sz)) if *sz != size || *ct != content_type => Err(StoreError::Invalid(format!(
            "media {} is {size} bytes of {content_type}; the body says {sz} bytes of {ct}",
            m.id
        ))),
        _ => Ok(()),
    }
}

/// A user's uploads within a window (for the daily byte budget).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaUsage {
    pub uploads: u64,
    /// Declared bytes of those uploads.
    pub bytes: u64,
    /// When the oldest of them was created (it leaves the window first).
    pub oldest: Option<i64>,
}

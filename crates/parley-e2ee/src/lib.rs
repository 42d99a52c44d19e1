//! End-to-end encryption for Parley clients: what a bot or an app uses to talk in encrypted
//! conversations without knowing Olm. The formats are docs/E2EE.md's; the cryptography is
//! Olm and Megolm as `vodozemac` implements them, and RustCrypto's AES-CTR and
//! XChaCha20-Poly1305; nothing here is hand-made cryptography.
//!
//! - [`E2ee`] sits on the SDK's [`parley_client::Client`] and [`parley_client::Connection`]:
//!   it publishes the device's keys, shares Megolm keys over Olm to-device messages, encrypts
//!   sends (retrying `stale_devices` with the same `client_id`), and turns the connection's
//!   events into decrypted messages ([`E2ee::handle`]).
//! - [`Machine`] is the state and the envelopes without I/O; [`Store`] the sealed SQLite file
//!   it lives in; [`safety_number`] and [`attachment`] the rest of docs/E2EE.md.

pub mod attachment;
mod client;
mod error;
mod machine;
mod safety;
mod store;
#[cfg(test)]
mod tests;

pub use attachment::EncryptedFile;
pub use client::{E2ee, E2eeEvent, KEYS_LOW_WATER, ONE_TIME_KEYS};
pub use error::{Error, Result};
pub use machine::{
    Decrypted, DeviceKeys, DeviceList, GroupDecryptError, MEGOLM_ALGORITHM, Machine, OLM_ALGORITHM, OutboundInfo,
    ROTATE_AFTER_MESSAGES, ROTATE_AFTER_MS, SentSession,
};
pub use safety::safety_number;
pub use store::{KEY_LEN, Store};

/// Unpadded standard base64, as vodozemac and libolm print binary values; decoding also
/// takes padded input.
pub(crate) mod b64 {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );

    pub(crate) fn encode(bytes: impl AsRef<[u8]>) -> String {
        ENGINE.encode(bytes)
    }

    pub(crate) fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
        ENGINE.decode(text)
    }
}

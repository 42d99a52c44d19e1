//! The key directory and the to-device queue of end-to-end encryption: opaque key material
//! (JSON texts a client library made) and payloads the store keeps and hands out, never reads.

use parley_core::ids::{DeviceId, UserId};

/// Most one-time keys stored per device.
pub const MAX_ONE_TIME_KEYS: u32 = 500;
/// Most keys one upload may carry.
pub const MAX_KEYS_PER_UPLOAD: usize = 100;
/// A device with fewer unused one-time keys than this is told to upload more.
pub const KEYS_LOW: u32 = 10;
/// Most payloads waiting for one device; more are refused until it acknowledges some.
pub const MAX_TO_DEVICE_QUEUE: u32 = 1000;
/// How long a `to_device` frame's `client_id` is remembered.
pub const TO_DEVICE_KEY_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// What `PUT /v1/keys` uploads; every key is canonical JSON text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyUpload {
    pub identity: Option<String>,
    /// `(key_id, key)`.
    pub one_time: Vec<(String, String)>,
    pub fallback: Option<(String, String)>,
}

/// One device's keys as a claim hands them out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedKey {
    pub user: UserId,
    pub device: DeviceId,
    pub identity: String,
    /// `(key_id, key)`: a one-time key (handed out once, now gone), or the fallback key.
    pub key: Option<(String, String)>,
    pub fallback: bool,
}

/// A user's devices and the version of that list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList {
    pub list_version: i64,
    /// Each device with its identity, once it has published one.
    pub devices: Vec<(DeviceId, Option<String>)>,
}

/// A payload for one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToDeviceOut {
    pub user: UserId,
    pub device: DeviceId,
    pub payload: String,
}

/// A queued payload as its recipient reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToDeviceMessage {
    /// Increases per recipient device, in the order the payloads were queued.
    pub id: i64,
    pub sender_user: UserId,
    pub sender_device: DeviceId,
    pub payload: String,
}

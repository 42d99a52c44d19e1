//! The errors of the E2EE layer.

use parley_client::ClientError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state file was sealed with another key (or a value in it was tampered with).
    #[error("the E2EE state cannot be opened with this key (wrong key, or the file was altered)")]
    WrongKey,
    /// The state file belongs to another user or device than the session using it.
    #[error("the E2EE state belongs to user {user_id} device {device_id}, not to this session")]
    OtherDevice { user_id: String, device_id: String },
    #[error("state file: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("state value: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The conversation is not end-to-end encrypted: send its messages in the clear instead.
    #[error("conversation {0} is not end-to-end encrypted")]
    NotEncrypted(String),
    /// A payload or message that cannot be decrypted or fails its checks; it is dropped.
    #[error("cannot decrypt: {0}")]
    Decrypt(String),
    /// Keys or sessions could not be set up with a device.
    #[error("olm: {0}")]
    Olm(String),
    /// The send kept being refused as `stale_devices` after refreshing and re-sharing.
    #[error("the conversation's devices kept changing; gave up after {0} attempts")]
    KeptStale(u32),
    /// A downloaded attachment does not match the digest the sender put in the message.
    #[error("the attachment's SHA-256 differs from the one in the message")]
    Digest,
    #[error("file: {0}")]
    Io(#[from] std::io::Error),
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Corrupt(e.to_string())
    }
}

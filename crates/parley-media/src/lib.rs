//! The media-store boundary. Clients never send media through the server's own API: they ask
//! for a short-lived signed upload URL, put the bytes straight into the store, and download
//! through their own signed URL. A [`MediaStore`] makes those URLs, checks what was uploaded
//! and removes objects; the server keeps the records (who uploaded what, who may see it).
//!
//! Two backends implement it: `parley-media-fs` (files under the data dir, served by the
//! server's own listener through [`Served`]) and `parley-media-s3` (any S3-compatible store,
//! URLs pre-signed with SigV4). Both pass the same suite (`conformance`).

use std::collections::BTreeMap;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use parley_core::ids::MediaId;

#[cfg(feature = "conformance")]
pub mod conformance;

/// The object a URL is for: what the client declared when it asked to upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub id: MediaId,
    pub size: u64,
    pub sha256: [u8; 32],
    pub content_type: String,
}

/// A signed upload: the client sends `PUT url` with exactly `headers` and the exact bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadUrl {
    pub url: String,
    /// Every header that was signed, lower-case names; nothing else is required.
    pub headers: BTreeMap<String, String>,
    pub expires_at: i64,
}

/// A signed download: `GET url` (with `Range` if wanted) until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadUrl {
    pub url: String,
    pub expires_at: i64,
}

/// What completing an upload found in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Nothing has been uploaded (yet).
    Missing,
    /// The object has the declared size and digest.
    Matches,
    /// Something is there but its size or digest differs; the caller discards it.
    Mismatch,
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The store could not be reached or answered with an error; worth retrying later.
    #[error("media store unavailable: {0}")]
    Unavailable(String),
    /// The store refused our credentials or configuration; an operator must act.
    #[error("media store misconfigured: {0}")]
    Misconfigured(String),
    #[error("media store i/o: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = MediaError> = std::result::Result<T, E>;

/// Where uploaded bytes live.
#[async_trait]
pub trait MediaStore: Send + Sync + 'static {
    /// `local` or `s3`, for logs and metrics.
    fn kind(&self) -> &'static str;

    /// Checks at boot that the store is usable (the bucket exists, the credentials work, the
    /// directory is writable), so a bad setting fails the start, not the first upload.
    async fn check(&self) -> Result<()>;

    /// A URL the client PUTs `object`'s bytes to, valid until `expires_at` (ms).
    fn upload_url(&self, object: &Object, expires_at: i64) -> Result<UploadUrl>;

    /// A URL that answers `object`'s bytes (honouring `Range`) until `expires_at` (ms).
    fn download_url(&self, object: &Object, expires_at: i64) -> Result<DownloadUrl>;

    /// Whether the stored object has the declared size and digest.
    async fn verify(&self, object: &Object) -> Result<Stored>;

    /// Removes the object; removing one that is not there is not an error.
    async fn delete(&self, id: MediaId) -> Result<()>;

    /// Removes every trace of half-finished uploads left by a crash (called once at start).
    async fn sweep(&self) -> Result<()> {
        Ok(())
    }

    /// The origin (`scheme://host[:port]`) clients fetch objects from when it is not this
    /// server's own, so the web client's Content-Security-Policy can allow it.
    fn origin(&self) -> Option<String> {
        None
    }

    /// The store's objects served by this server's own listener (the local backend), if any.
    fn served(&self) -> Option<&dyn Served> {
        None
    }
}

/// Why a signed request was refused. The server answers 403 for all of them alike, so a
/// prober learns nothing about which check failed or whether the object exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("the signature does not match")]
    BadSignature,
    #[error("the URL has expired")]
    Expired,
    #[error("a signed header is missing or differs")]
    HeaderMismatch,
}

/// What a valid signed upload URL allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutGrant {
    pub id: MediaId,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// What a valid signed download URL allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetGrant {
    pub id: MediaId,
    pub content_type: String,
}

/// Why a streamed upload was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("the body is longer than the declared {0} bytes")]
    TooLong(u64),
    #[error("the body is shorter than the declared size")]
    TooShort,
    #[error("the body's SHA-256 differs from the declared one")]
    Digest,
    #[error("the upload was interrupted: {0}")]
    Body(String),
    /// Another upload of the same media is under way.
    #[error("another upload of this media is in progress")]
    Busy,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A request body, chunk by chunk.
pub type BodyStream = Pin<Box<dyn Stream<Item = std::result::Result<Bytes, String>> + Send>>;

/// The signed-URL endpoints of a store the server serves itself. The server does the HTTP
/// (headers, ranges, status codes); the store checks signatures and moves bytes.
#[async_trait]
pub trait Served: Send + Sync {
    /// Checks a signed upload URL (`query` as sent) and the signed headers the request carries.
    fn authorize_put(
        &self,
        id: &str,
        query: &str,
        content_length: Option<u64>,
        content_type: Option<&str>,
        now_ms: i64,
    ) -> std::result::Result<PutGrant, Denied>;

    /// Streams the body into a temporary file, never whole in memory, refusing more than the
    /// declared size, and moves it into place only when the size and digest match.
    async fn put(&self, grant: &PutGrant, body: BodyStream) -> std::result::Result<(), PutError>;

    /// Checks a signed download URL.
    fn authorize_get(&self, id: &str, query: &str, now_ms: i64) -> std::result::Result<GetGrant, Denied>;

    /// The stored file and its length, or `None` when it is not (or no longer) there.
    async fn open(&self, id: MediaId) -> Result<Option<(tokio::fs::File, u64)>>;
}

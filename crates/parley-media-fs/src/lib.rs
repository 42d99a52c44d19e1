//! The embedded media store: uploads as files under the data dir, reached through URLs this
//! server signs itself and serves on its own listener (`/blobs/{media_id}`, see
//! `parley-server`'s `routes/blobs.rs`).
//!
//! - **Signing**: HMAC-SHA256 with a 32-byte key kept in `signing.key` beside the files (made
//!   on first start, mode 0600), over the method, the media id, the expiry and what the request
//!   must carry: for an upload its `Content-Length`, its `Content-Type` and the declared SHA-256
//!   (in the URL); for a download the content type it is served with. The signature is the
//!   URL's last parameter and is compared in constant time. An upload's signed headers are
//!   exactly the ones every HTTP client sends anyway (`Content-Length` comes with any body), so
//!   a client that follows `upload.headers` cannot get a signature mismatch.
//! - **Uploads** stream into `tmp/` and are never held whole in memory; more bytes than
//!   declared stop the upload at once; the digest is computed on the way. Only a file with the
//!   declared size and digest is fsync'd and renamed into `objects/`, so a crash mid-upload
//!   leaves nothing visible, and [`FsMedia::sweep`] empties `tmp/` at start.
//! - **Verification** at completion checks the file is there with its size: nothing reaches
//!   `objects/` without its digest having been checked.

mod sign;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine;
use futures_util::StreamExt;
use parley_core::ids::MediaId;
use parley_media::{
    BodyStream, Denied, DownloadUrl, GetGrant, MediaError, MediaStore, Object, PutError, PutGrant, Result, Served,
    Stored, UploadUrl,
};
use sha2::{Digest, Sha256};

use sign::Signer;

/// How long an upload may receive nothing before it is dropped.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Bytes an upload holds between the network and the disk at most.
const WRITE_BUFFER: usize = 256 * 1024;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Media as files under a directory of the data dir.
pub struct FsMedia {
    root: PathBuf,
    /// `{public_url}/blobs/`, what every signed URL starts with.
    base: String,
    signer: Signer,
    /// Media with an upload under way: a second one at the same time is refused, so one URL
    /// cannot hold many files and descriptors open.
    uploading: Arc<Mutex<HashSet<MediaId>>>,
}

/// The end of one upload: forgets it is under way and removes its temporary file unless it was
/// moved into place, however the upload ends (an error, or the request dropped mid-way).
struct InFlight {
    uploading: Arc<Mutex<HashSet<MediaId>>>,
    id: MediaId,
    tmp: PathBuf,
    kept: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.tmp);
        }
        self.uploading.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

impl std::fmt::Debug for FsMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsMedia").field("root", &self.root).field("base", &self.base).finish_non_exhaustive()
    }
}

impl FsMedia {
    /// Opens (creating) the store in `root`; URLs point at `public_url` (the address clients
    /// reach this server at, e.g. `https://chat.example.com`).
    pub fn open(root: &Path, public_url: &str) -> std::io::Result<FsMedia> {
        for dir in ["objects", "tmp"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        // Every shard directory exists, durably, before the first upload is renamed into one.
        let objects = root.join("objects");
        for shard in 0..=0xffu8 {
            std::fs::create_dir_all(objects.join(format!("{shard:02x}")))?;
        }
        std::fs::File::open(&objects)?.sync_all()?;
        let signer = Signer::load_or_create(&root.join("signing.key"))?;
        let base = format!("{}/blobs/", public_url.trim_end_matches('/'));
        Ok(FsMedia { root: root.to_owned(), base, signer, uploading: Default::default() })
    }

    fn object_path(&self, id: MediaId) -> PathBuf {
        // 256 subdirectories keep directories small with millions of files.
        self.root.join("objects").join(format!("{:02x}", id.0 & 0xff)).join(id.to_string())
    }
}

#[async_trait]
impl MediaStore for FsMedia {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn check(&self) -> Result<()> {
        let probe = self.root.join("tmp").join(format!(".probe-{}", rand::random::<u64>()));
        tokio::fs::write(&probe, b"ok")
            .await
            .map_err(|e| MediaError::Misconfigured(format!("cannot write to {}: {e}", self.root.display())))?;
        tokio::fs::remove_file(&probe).await?;
        Ok(())
    }

    fn upload_url(&self, object: &Object, expires_at: i64) -> Result<UploadUrl> {
        let digest = B64.encode(object.sha256);
        let sig = self.signer.put(object.id, expires_at, object.size, &object.content_type, &digest);
        Ok(UploadUrl {
            url: format!("{}{}?e={expires_at}&h={digest}&sig={sig}", self.base, object.id),
            headers: [
                ("content-length".to_owned(), object.size.to_string()),
                ("content-type".to_owned(), object.content_type.clone()),
            ]
            .into(),
            expires_at,
        })
    }

    fn download_url(&self, object: &Object, expires_at: i64) -> Result<DownloadUrl> {
        let sig = self.signer.get(object.id, expires_at, &object.content_type);
        let t: String = url::form_urlencoded::byte_serialize(object.content_type.as_bytes()).collect();
        Ok(DownloadUrl { url: format!("{}{}?e={expires_at}&t={t}&sig={sig}", self.base, object.id), expires_at })
    }

    async fn verify(&self, object: &Object) -> Result<Stored> {
        match tokio::fs::metadata(self.object_path(object.id)).await {
            Ok(m) if m.len() == object.size => Ok(Stored::Matches),
            Ok(_) => Ok(Stored::Mismatch),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stored::Missing),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, id: MediaId) -> Result<()> {
        match tokio::fs::remove_file(self.object_path(id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn sweep(&self) -> Result<()> {
        let mut dir = tokio::fs::read_dir(self.root.join("tmp")).await?;
        let mut removed = 0;
        while let Some(entry) = dir.next_entry().await? {
            tokio::fs::remove_file(entry.path()).await?;
            removed += 1;
        }
        if removed > 0 {
            tracing::info!(removed, "removed unfinished uploads left by an earlier run");
        }
        Ok(())
    }

    fn served(&self) -> Option<&dyn Served> {
        Some(self)
    }
}

/// The query parameters of a signed URL.
fn params(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn media_id(id: &str) -> std::result::Result<MediaId, Denied> {
    id.parse().map_err(|_| Denied::BadSignature)
}

#[async_trait]
impl Served for FsMedia {
    fn authorize_put(
        &self,
        id: &str,
        query: &str,
        content_length: Option<u64>,
        content_type: Option<&str>,
        now_ms: i64,
    ) -> std::result::Result<PutGrant, Denied> {
        let id = media_id(id)?;
        let q = params(query);
        let expires: i64 = param(&q, "e").and_then(|e| e.parse().ok()).ok_or(Denied::BadSignature)?;
        let digest = param(&q, "h").ok_or(Denied::BadSignature)?;
        let sig = param(&q, "sig").ok_or(Denied::BadSignature)?;
        let (Some(size), Some(content_type)) = (content_length, content_type) else {
            return Err(Denied::HeaderMismatch);
        };
        self.signer.verify_put(id, expires, size, content_type, digest, sig)?;
        if now_ms > expires {
            return Err(Denied::Expired);
        }
        let sha256 = B64.decode(digest).ok().and_then(|d| d.try_into().ok()).ok_or(Denied::BadSignature)?;
        Ok(PutGrant { id, size, sha256 })
    }

    async fn put(&self, grant: &PutGrant, mut body: BodyStream) -> std::result::Result<(), PutError> {
        let tmp = self.root.join("tmp").join(format!("{}.{:016x}", grant.id, rand::random::<u64>()));
        if !self.uploading.lock().unwrap_or_else(|e| e.into_inner()).insert(grant.id) {
            return Err(PutError::Busy);
        }
        let mut flight = InFlight { uploading: self.uploading.clone(), id: grant.id, tmp: tmp.clone(), kept: false };
        // The file is written by blocking tasks, a batch of received chunks at a time, so no
        // copy of the body is made and at most WRITE_BUFFER bytes wait per upload.
        let file = Arc::new(std::fs::File::create(&tmp)?);
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let mut batch: Vec<bytes::Bytes> = Vec::new();
        let mut batched = 0usize;
        loop {
            // A client that stops sending does not hold the file open for ever.
            let chunk = tokio::time::timeout(IDLE_TIMEOUT, body.next())
                .await
                .map_err(|_| PutError::Body(format!("nothing received for {} s", IDLE_TIMEOUT.as_secs())))?;
            if let Some(chunk) = chunk.as_ref() {
                let chunk = chunk.as_ref().map_err(|e| PutError::Body(e.clone()))?;
                written += chunk.len() as u64;
                if written > grant.size {
                    return Err(PutError::TooLong(grant.size));
                }
                hasher.update(chunk);
                batched += chunk.len();
                batch.push(chunk.clone());
            }
            if batched >= WRITE_BUFFER || (chunk.is_none() && batched > 0) {
                let (f, chunks) = (file.clone(), std::mem::take(&mut batch));
                batched = 0;
                tokio::task::spawn_blocking(move || {
                    use std::io::Write;
                    chunks.iter().try_for_each(|c| (&*f).write_all(c))
                })
                .await
                .map_err(std::io::Error::other)??;
            }
            if chunk.is_none() {
                break;
            }
        }
        if written < grant.size {
            return Err(PutError::TooShort);
        }
        if <[u8; 32]>::from(hasher.finalize()) != grant.sha256 {
            return Err(PutError::Digest);
        }
        let f = file.clone();
        tokio::task::spawn_blocking(move || f.sync_all()).await.map_err(std::io::Error::other)??;
        drop(file);
        let path = self.object_path(grant.id);
        let dir = path.parent().expect("objects have a directory");
        tokio::fs::rename(&tmp, &path).await?;
        flight.kept = true;
        // The rename is durable once the directory is.
        tokio::fs::File::open(dir).await?.sync_all().await?;
        Ok(())
    }

    fn authorize_get(&self, id: &str, query: &str, now_ms: i64) -> std::result::Result<GetGrant, Denied> {
        let id = media_id(id)?;
        let q = params(query);
        let expires: i64 = param(&q, "e").and_then(|e| e.parse().ok()).ok_or(Denied::BadSignature)?;
        let content_type = param(&q, "t").ok_or(Denied::BadSignature)?;
        let sig = param(&q, "sig").ok_or(Denied::BadSignature)?;
        self.signer.verify_get(id, expires, content_type, sig)?;
        if now_ms > expires {
            return Err(Denied::Expired);
        }
        Ok(GetGrant { id, content_type: content_type.to_owned() })
    }

    async fn open(&self, id: MediaId) -> Result<Option<(tokio::fs::File, u64)>> {
        match tokio::fs::File::open(self.object_path(id)).await {
            Ok(f) => {
                let len = f.metadata().await?.len();
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

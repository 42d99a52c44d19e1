//! Media: the whole upload dance (hash, ask, PUT straight to storage, complete) and
//! resumable, verified downloads. Files are streamed, never read whole into memory; with the
//! `thumbnails` feature, [`preview`] makes the small JPEG and blurhash a media message carries
//! so recipients see something at once.

use std::path::Path;

use base64::Engine;
use futures_util::StreamExt;
use parley_proto::Id;
use parley_proto::rest::{CreateMedia, MediaCreated, MediaEnvelope, MediaInfo, MediaWithDownload, UploadTarget};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{ClientError, Result};
use crate::rest::{Client, api_error};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Attempts at one upload before giving up (a broken link, an expired URL).
const UPLOAD_ATTEMPTS: u32 = 3;

/// Progress of a transfer: `(bytes done, bytes in all)`.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

/// What a media message can show before the file itself arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preview {
    pub width: u32,
    pub height: u32,
    /// Standard base64 of a JPEG of at most 8 KiB.
    pub thumbnail: String,
    pub blurhash: String,
}

/// The SHA-256 of a file, read in chunks.
pub async fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}

fn io(e: std::io::Error) -> ClientError {
    ClientError::Io(e)
}

/// A `media` message body for a completed upload.
pub fn media_body(media: &MediaInfo, caption: Option<&str>, name: Option<&str>, preview: Option<&Preview>) -> Value {
    let mut body = json!({"media_id": media.media_id, "content_type": media.content_type, "size": media.size});
    if let Some(c) = caption.filter(|c| !c.is_empty()) {
        body["caption"] = json!(c);
    }
    if let Some(n) = name {
        body["name"] = json!(n);
    }
    if let Some(p) = preview {
        body["width"] = json!(p.width);
        body["height"] = json!(p.height);
        body["thumbnail"] = json!(p.thumbnail);
        body["blurhash"] = json!(p.blurhash);
    }
    body
}

impl Client {
    /// `POST /v1/media`: a pending upload and where to PUT it.
    pub async fn create_media(&self, size: u64, content_type: &str, sha256: &[u8; 32]) -> Result<MediaCreated> {
        let body = CreateMedia { size, content_type: content_type.to_owned(), sha256: B64.encode(sha256) };
        self.json(Method::POST, &["media"], Some(&body)).await
    }

    /// `POST /v1/media/{id}/complete`.
    pub async fn complete_media(&self, id: Id) -> Result<MediaInfo> {
        let env: MediaEnvelope = self.json(Method::POST, &["media", &id.to_string(), "complete"], None::<&()>).await?;
        Ok(env.media)
    }

    /// `GET /v1/media/{id}`: the record and a download URL (and for a pending upload of
    /// one's own, a fresh upload URL).
    pub async fn media(&self, id: Id) -> Result<MediaWithDownload> {
        self.json(Method::GET, &["media", &id.to_string()], None::<&()>).await
    }

    /// `DELETE /v1/media/{id}`: an upload of one's own that no message references.
    pub async fn delete_media(&self, id: Id) -> Result<()> {
        self.empty(Method::DELETE, &["media", &id.to_string()], None::<&()>).await
    }

    /// Uploads a file and completes it: the media is ready to send when this returns. A broken
    /// transfer is retried (with a fresh URL) up to three times.
    pub async fn upload_file(&self, path: &Path, content_type: &str, progress: Progress<'_>) -> Result<MediaInfo> {
        let size = tokio::fs::metadata(path).await.map_err(io)?.len();
        let digest = sha256_file(path).await?;
        let created = self.create_media(size, content_type, &digest).await?;
        let mut target = created.upload;
        let mut attempt = 1;
        loop {
            let file = tokio::fs::File::open(path).await.map_err(io)?;
            match self.put_object(&target, file, size, progress).await {
                Ok(()) => break,
                Err(e) if attempt < UPLOAD_ATTEMPTS && retryable(&e) => {
                    tracing::debug!(attempt, error = %e, "upload failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempt))).await;
                    target = match self.media(created.media_id).await?.upload {
                        Some(t) => t,
                        None => break, // no longer pending: the last attempt got through
                    };
                }
                Err(e) => return Err(e),
            }
        }
        self.complete_media(created.media_id).await
    }

    /// Uploads bytes held in memory (small files, thumbnails of tests) and completes them.
    pub async fn upload_bytes(&self, bytes: Vec<u8>, content_type: &str) -> Result<MediaInfo> {
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let created = self.create_media(bytes.len() as u64, content_type, &digest).await?;
        let mut req = self.http.put(&created.upload.url);
        for (k, v) in &created.upload.headers {
            req = req.header(k, v);
        }
        check(req.body(bytes).send().await?).await?;
        self.complete_media(created.media_id).await
    }

    async fn put_object(
        &self,
        target: &UploadTarget,
        file: tokio::fs::File,
        size: u64,
        progress: Progress<'_>,
    ) -> Result<()> {
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = sent.clone();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).inspect(move |chunk| {
            if let Ok(c) = chunk {
                counter.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        });
        // The signed headers, Content-Length included: a streamed body is otherwise chunked,
        // which a signed length refuses.
        let mut req = self.http.put(&target.url);
        for (k, v) in &target.headers {
            req = req.header(k, v);
        }
        let send = req.body(reqwest::Body::wrap_stream(stream)).send();
        tokio::pin!(send);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        let resp = loop {
            tokio::select! {
                r = &mut send => break r?,
                _ = tick.tick() => progress(sent.load(std::sync::atomic::Ordering::Relaxed), size),
            }
        };
        progress(size, size);
        check(resp).await
    }

    /// Downloads a media into `path`, resuming a `path.part` left by an interrupted download
    /// with a range request, and checking the SHA-256 before the file takes its name.
    pub async fn download_file(&self, id: Id, path: &Path, progress: Progress<'_>) -> Result<MediaInfo> {
        let got = self.media(id).await?;
        let media = got.media;
        let part = path.with_file_name(format!(
            "{}.part",
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "download".into())
        ));
        let mut have = tokio::fs::metadata(&part).await.map(|m| m.len()).unwrap_or(0);
        if have > media.size {
            have = 0;
        }
        if have < media.size {
            self.fetch_into(&got.download.url, &part, have, media.size, progress).await?;
        }
        let digest = B64.encode(sha256_file(&part).await?);
        if digest != media.sha256 {
            // Whatever was there (another file's bytes, a damaged part): start again next time.
            let _ = tokio::fs::remove_file(&part).await;
            return Err(ClientError::Decode("the downloaded file's SHA-256 differs from the media's".into()));
        }
        tokio::fs::rename(&part, path).await.map_err(io)?;
        Ok(media)
    }

    /// Fetches `url` into `part`, from byte `have` on when the server answers the range with
    /// exactly that start, else from the beginning.
    async fn fetch_into(&self, url: &str, part: &Path, have: u64, size: u64, progress: Progress<'_>) -> Result<()> {
        let mut req = self.http.get(url);
        if have > 0 {
            req = req.header("range", format!("bytes={have}-"));
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let resumes = status == 206
            && resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&format!("bytes {have}-")));
        if have > 0 && (status == 416 || (status == 206 && !resumes)) {
            return Box::pin(self.fetch_into(url, part, 0, size, progress)).await;
        }
        if !(status == 200 || status == 206) {
            return Err(api_error(resp.status(), &resp.bytes().await?));
        }
        let (mut file, mut done) = if resumes {
            (tokio::fs::OpenOptions::new().append(true).open(part).await.map_err(io)?, have)
        } else {
            (tokio::fs::File::create(part).await.map_err(io)?, 0)
        };
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            file.write_all(&chunk).await.map_err(io)?;
            done += chunk.len() as u64;
            progress(done, size);
        }
        file.sync_all().await.map_err(io)?;
        Ok(())
    }
}

async fn check(resp: reqwest::Response) -> Result<()> {
    if resp.status().is_success() {
        return Ok(());
    }
    let status = resp.status();
    Err(api_error(status, &resp.bytes().await?))
}

/// Worth another attempt: the link broke, the URL expired, or storage was unavailable.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Http(_) => true,
        ClientError::Api { status, .. } => *status == 403 || *status >= 500,
        _ => false,
    }
}

/// A preview of an image: its size, a JPEG thumbnail of at most 8 KiB (longest side 96 px,
/// quality lowered until it fits) and a 4×3 blurhash. `None` for what is not a decodable image.
#[cfg(feature = "thumbnails")]
pub fn preview(bytes: &[u8]) -> Option<Preview> {
    use image::GenericImageView;
    let img = image::load_from_memory(bytes).ok()?;
    let (width, height) = img.dimensions();
    let small = img.thumbnail(96, 96).to_rgb8();
    let mut thumbnail = Vec::new();
    for quality in [70u8, 50, 35, 20] {
        thumbnail.clear();
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut thumbnail, quality);
        small.write_with_encoder(enc).ok()?;
        if thumbnail.len() <= 8 * 1024 {
            break;
        }
    }
    if thumbnail.len() > 8 * 1024 {
        return None;
    }
    let tiny = img.thumbnail(32, 32).to_rgba8();
    let blurhash = blurhash::encode(4, 3, tiny.width(), tiny.height(), tiny.as_raw()).ok()?;
    Some(Preview { width, height, thumbnail: B64.encode(&thumbnail), blurhash })
}

#[cfg(all(test, feature = "thumbnails"))]
mod tests {
    use super::*;

    #[test]
    fn previews_fit_a_message() {
        let img = image::RgbImage::from_fn(640, 480, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let p = preview(&png).expect("a preview");
        assert_eq!((p.width, p.height), (640, 480));
        let jpeg = B64.decode(&p.thumbnail).unwrap();
        assert!(jpeg.len() <= 8 * 1024 && jpeg.starts_with(&[0xff, 0xd8]));
        assert_eq!(p.blurhash.len(), 4 + 2 * 4 * 3, "{}", p.blurhash);
        assert!(preview(b"not an image").is_none());
    }
}

//! `media`: N clients each upload files of each size straight to the server's media store
//! (ask, PUT, complete), then download them back. Reports, per size, the upload and download
//! throughput (all clients together), the time from asking to a ready media, and the server's
//! resident memory sampled every 20 ms during each phase: the server streams bodies to and
//! from disk, so its memory must not grow with the size of the files.
//!
//! The server must let one user upload this much:
//! `parley serve --media-uploads-per-minute 100000 --media-upload-burst 100000 --media-daily-bytes 1000000000000`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parley_client::Client;
use parley_proto::Id;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::idle::rss_kib;
use crate::stats::Summary;
use crate::{BenchError, Result};

#[derive(Clone, Debug)]
pub struct MediaArgs {
    pub server: String,
    /// Concurrent clients.
    pub clients: usize,
    /// File sizes, in bytes; each is a phase.
    pub sizes: Vec<u64>,
    /// Files each client uploads per size.
    pub files: usize,
    pub server_pid: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct SizeReport {
    pub size_bytes: u64,
    pub uploads: usize,
    /// Megabytes (10^6 bytes) per second, all clients together, first PUT to last completion.
    pub upload_mb_per_sec: f64,
    pub download_mb_per_sec: f64,
    /// `POST /v1/media` → `complete` answered `ready`.
    pub time_to_ready_ms: Summary,
    /// Largest server RSS sampled while uploading and while downloading.
    pub server_rss_upload_max_kib: Option<u64>,
    pub server_rss_download_max_kib: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct MediaReport {
    pub scenario: &'static str,
    pub clients: usize,
    pub server_rss_before_kib: Option<u64>,
    pub sizes: Vec<SizeReport>,
}

/// Samples the server's RSS until stopped; returns the largest.
struct RssWatch {
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssWatch {
    fn start(pid: Option<u32>) -> RssWatch {
        let (max, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (m, s) = (max.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let Some(pid) = pid else { return };
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    m.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        RssWatch { max, stop, task }
    }

    async fn finish(self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        Some(self.max.load(Ordering::Relaxed)).filter(|&m| m > 0)
    }
}

/// Bytes that do not compress or repeat, different per client.
fn payload(len: u64, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn upload_one(client: &Client, bytes: Arc<Vec<u8>>, digest: [u8; 32]) -> Result<(Id, Duration)> {
    let started = Instant::now();
    let created = client.create_media(bytes.len() as u64, "application/octet-stream", &digest).await?;
    let mut req = reqwest::Client::new().put(&created.upload.url);
    for (k, v) in &created.upload.headers {
        req = req.header(k, v);
    }
    let body = reqwest::Body::from(bytes.as_ref().clone());
    let resp = req.body(body).send().await.map_err(|e| BenchError::Failed(format!("upload: {e}")))?;
    if !resp.status().is_success() {
        return Err(BenchError::Failed(format!("upload answered {}", resp.status())));
    }
    let media = client.complete_media(created.media_id).await?;
    if media.state != "ready" {
        return Err(BenchError::Failed(format!("media {} is {}", media.media_id, media.state)));
    }
    Ok((created.media_id, started.elapsed()))
}

async fn download_one(client: &Client, id: Id, size: u64) -> Result<()> {
    let url = client.media(id).await?.download.url;
    let resp = reqwest::get(&url).await.map_err(|e| BenchError::Failed(format!("download: {e}")))?;
    if !resp.status().is_success() {
        return Err(BenchError::Failed(format!("download answered {}", resp.status())));
    }
    let mut got = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        got += chunk.map_err(|e| BenchError::Failed(format!("download: {e}")))?.len() as u64;
    }
    if got != size {
        return Err(BenchError::Failed(format!("downloaded {got} of {size} bytes")));
    }
    Ok(())
}

pub async fn run(args: MediaArgs) -> Result<MediaReport> {
    let users = crate::setup::users(&args.server, args.clients).await?;
    let before = args.server_pid.and_then(rss_kib);
    let mut sizes = Vec::new();
    for &size in &args.sizes {
        // The files are made (and hashed) before the clock starts.
        let files: Vec<(Arc<Vec<u8>>, [u8; 32])> = (0..users.len())
            .map(|i| {
                let bytes = payload(size, size ^ i as u64);
                let digest: [u8; 32] = Sha256::digest(&bytes).into();
                (Arc::new(bytes), digest)
            })
            .collect();
        let watch = RssWatch::start(args.server_pid);
        let started = Instant::now();
        let uploads = futures_util::future::join_all(users.iter().zip(&files).map(|(u, (bytes, digest))| async move {
            let mut out = Vec::with_capacity(args.files);
            for _ in 0..args.files {
                out.push(upload_one(&u.client, bytes.clone(), *digest).await?);
            }
            Ok::<_, BenchError>(out)
        }))
        .await;
        let up_secs = started.elapsed().as_secs_f64();
        let upload_rss = watch.finish().await;
        let mut ids: Vec<Vec<Id>> = Vec::new();
        let mut ready: Vec<Duration> = Vec::new();
        for r in uploads {
            let r = r?;
            ids.push(r.iter().map(|(id, _)| *id).collect());
            ready.extend(r.iter().map(|(_, t)| *t));
        }
        let total = size as f64 * ready.len() as f64;

        let watch = RssWatch::start(args.server_pid);
        let started = Instant::now();
        let downloads = futures_util::future::join_all(users.iter().zip(&ids).map(|(u, mine)| async move {
            for id in mine {
                download_one(&u.client, *id, size).await?;
            }
            Ok::<_, BenchError>(())
        }))
        .await;
        let down_secs = started.elapsed().as_secs_f64();
        let download_rss = watch.finish().await;
        for d in downloads {
            d?;
        }
        // Leave the disk as it was: the uploads are nobody's.
        for (u, mine) in users.iter().zip(&ids) {
            for id in mine {
                u.client.delete_media(*id).await?;
            }
        }
        sizes.push(SizeReport {
            size_bytes: size,
            uploads: ready.len(),
            upload_mb_per_sec: total / up_secs / 1e6,
            download_mb_per_sec: total / down_secs / 1e6,
            time_to_ready_ms: Summary::of(&mut ready),
            server_rss_upload_max_kib: upload_rss,
            server_rss_download_max_kib: download_rss,
        });
    }
    Ok(MediaReport { scenario: "media", clients: args.clients, server_rss_before_kib: before, sizes })
}

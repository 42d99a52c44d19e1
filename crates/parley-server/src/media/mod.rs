//! Media: the endpoints' shared checks (`routes/media.rs`, `routes/blobs.rs`), the collector
//! that removes what nothing references ([`gc`]), and the media metrics.

pub(crate) mod gc;

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use base64::Engine;
use parley_core::media::Media;
use parley_media::Object;
use parley_proto::Id;
use parley_proto::rest::MediaInfo;

pub(crate) fn object(m: &Media) -> Object {
    Object { id: m.id, size: m.size, sha256: m.sha256, content_type: m.content_type.clone() }
}

pub(crate) fn info(m: &Media) -> MediaInfo {
    MediaInfo {
        media_id: Id(m.id.0),
        size: m.size,
        content_type: m.content_type.clone(),
        sha256: base64::engine::general_purpose::STANDARD.encode(m.sha256),
        state: m.state.as_str().into(),
        created_at: m.created_at,
    }
}

#[derive(Default)]
pub(crate) struct MediaMetrics {
    pub uploads_created: AtomicU64,
    pub uploads_completed: AtomicU64,
    pub uploads_mismatched: AtomicU64,
    /// Bytes of completed uploads.
    pub bytes_uploaded: AtomicU64,
    pub downloads_granted: AtomicU64,
    /// Bytes the local store served.
    pub bytes_served: AtomicU64,
    pub gc_runs: AtomicU64,
    pub gc_removed: AtomicU64,
    pub gc_errors: AtomicU64,
}

impl MediaMetrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn render(&self, out: &mut String) {
        let counters = [
            ("media_uploads_created_total", "Uploads started (POST /v1/media).", &self.uploads_created),
            (
                "media_uploads_completed_total",
                "Uploads completed with the declared size and digest.",
                &self.uploads_completed,
            ),
            (
                "media_uploads_mismatched_total",
                "Uploads discarded at completion: wrong size or digest.",
                &self.uploads_mismatched,
            ),
            ("media_uploaded_bytes_total", "Bytes of completed uploads.", &self.bytes_uploaded),
            ("media_downloads_granted_total", "Download URLs handed out.", &self.downloads_granted),
            ("media_served_bytes_total", "Bytes the local media store served.", &self.bytes_served),
            ("media_gc_runs_total", "Runs of the media collector.", &self.gc_runs),
            ("media_gc_removed_total", "Uploads the collector removed from storage.", &self.gc_removed),
            ("media_gc_errors_total", "Objects the collector failed to remove (retried next run).", &self.gc_errors),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP parley_{name} {help}\n# TYPE parley_{name} counter\nparley_{name} {}",
                v.load(Relaxed)
            );
        }
    }
}

//! The media collector: removes uploads no message references 24 h after upload, and uploads
//! whose every referencing message was deleted, in bounded batches.
//!
//! Three steps, each safe to repeat: the store marks a batch doomed (only rows with no
//! reference, in the same order as sends take theirs, so a message sent at that moment either
//! keeps its upload or is refused), the objects are removed, then the records are forgotten.
//! A node that dies between the steps leaves doomed rows the next run finishes.
//!
//! A removed upload's record stays as a tombstone while it counts against its uploader's daily
//! budget and while a URL handed out for it could still be used; then its object is removed
//! once more (an upload URL used after the removal would have put it back) and the record goes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_core::ids::MediaId;

use super::MediaMetrics;
use crate::state::App;

/// Uploads marked per batch.
const BATCH: u32 = 256;
/// Batches per run at most; the rest waits for the next run.
const MAX_BATCHES: usize = 64;

pub(crate) async fn run(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_millis(app.config.media_gc_interval_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if app.shutdown.is_cancelled() {
            return;
        }
        collect(&app).await;
    }
}

/// One run: returns how many uploads it removed.
pub(crate) async fn collect(app: &App) -> usize {
    let started = Instant::now();
    MediaMetrics::add(&app.media_metrics.gc_runs, 1);
    let (mut removed, mut failed) = (0usize, 0usize);
    for _ in 0..MAX_BATCHES {
        let orphan_before = parley_core::now_ms() - app.config.media_orphan_after_ms as i64;
        let doomed = match app.store.doom_media(orphan_before, BATCH).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "media collector: cannot read the store");
                break;
            }
        };
        let mut gone: Vec<MediaId> = Vec::with_capacity(doomed.len());
        for id in &doomed {
            match app.media.delete(*id).await {
                Ok(()) => gone.push(*id),
                Err(e) => {
                    failed += 1;
                    tracing::warn!(media_id = %id, error = %e, "media collector: cannot remove an object");
                }
            }
        }
        if let Err(e) = app.store.forget_media(&gone).await {
            tracing::warn!(error = %e, "media collector: cannot forget removed uploads");
            break;
        }
        removed += gone.len();
        // A batch whose objects could not all be removed is retried next run, not now.
        if doomed.len() < BATCH as usize || gone.len() < doomed.len() {
            break;
        }
    }
    purge(app).await;
    MediaMetrics::add(&app.media_metrics.gc_removed, removed as u64);
    MediaMetrics::add(&app.media_metrics.gc_errors, failed as u64);
    if removed > 0 || failed > 0 {
        tracing::info!(removed, failed, elapsed_ms = started.elapsed().as_millis() as u64, "media collector ran");
    } else {
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "media collector ran: nothing to remove");
    }
    removed
}

/// The tombstones' last step, a batch per run.
async fn purge(app: &App) {
    let window = (app.config.media_orphan_after_ms as i64).max(24 * 60 * 60 * 1000);
    let before = parley_core::now_ms() - window - parley_core::media::URL_TTL_MS;
    let ids = match app.store.media_tombstones(before, BATCH).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "media collector: cannot read the store");
            return;
        }
    };
    let mut gone = Vec::with_capacity(ids.len());
    for id in ids {
        match app.media.delete(id).await {
            Ok(()) => gone.push(id),
            Err(e) => tracing::warn!(media_id = %id, error = %e, "media collector: cannot remove an object"),
        }
    }
    if let Err(e) = app.store.purge_media(&gone).await {
        tracing::warn!(error = %e, "media collector: cannot drop tombstones");
    }
}

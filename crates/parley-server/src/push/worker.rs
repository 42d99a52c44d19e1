//! The push worker: claims due pushes from the store's queue (with a lease, so in a cluster one
//! node sends each), checks that each is still wanted, sends it through its provider with
//! bounded concurrency, and reports every outcome back in batches.
//!
//! It wakes when a commit queued pushes (`StoreEvent::Pushes`, on the node that committed),
//! when the earliest pending push falls due, and at least every second (pushes queued by other
//! nodes, leases of dead nodes running out).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parley_core::ids::DeviceId;
use parley_core::push::{self, PushFailure, Standing};
use parley_push::{Payload, Push};
use parley_store::{PushDone, PushJob, PushOutcome};
use tokio::sync::{Semaphore, mpsc};

use crate::state::App;

/// Pushes claimed per round trip.
const CLAIM_BATCH: u32 = 256;
/// The longest the worker sleeps without looking at the queue.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Outcomes written per batch.
const FINISH_BATCH: usize = 512;

pub(crate) async fn run(app: Arc<App>) {
    let pusher = &app.push;
    if let Err(e) = app.store.release_pushes(&pusher.node).await {
        tracing::warn!(error = %e, "cannot release this node's push leases");
    }
    let (done_tx, done_rx) = mpsc::channel::<PushDone>(4 * FINISH_BATCH);
    // Ends by itself once the last in-flight push has reported (when this loop is stopped).
    tokio::spawn(finish(app.clone(), done_rx));
    let slots = Arc::new(Semaphore::new(app.config.push_concurrency.max(1)));
    let caps = Arc::new(DeviceCaps::default());
    let concurrency = app.config.push_concurrency.max(1);
    // Claims are round trips to the store: take them in batches, once half the slots are free,
    // rather than one job each time a push ends.
    let batch = (concurrency / 2).clamp(1, CLAIM_BATCH as usize);
    loop {
        // Claim no more than can be sent at once: a claimed push holds its lease while it waits.
        let Ok(mut permits) = slots.clone().acquire_many_owned(batch as u32).await else { break };
        let now = parley_core::now_ms();
        let jobs = match app.store.claim_pushes(&pusher.node, now, app.config.push_lease_ms as i64, batch as u32).await
        {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim pushes");
                drop(permits);
                sleep_or_wake(&app, IDLE_POLL).await;
                continue;
            }
        };
        if jobs.is_empty() {
            drop(permits);
            let until = match app.store.next_push_due().await {
                Ok(Some(at)) => Duration::from_millis((at - now).clamp(0, IDLE_POLL.as_millis() as i64) as u64),
                _ => IDLE_POLL,
            };
            sleep_or_wake(&app, until).await;
            continue;
        }
        let pairs: Vec<_> = jobs.iter().map(|j| (j.registration.user_id, j.device_id())).collect();
        let online = app.router.devices_online(&pairs).await;
        for (job, online) in jobs.into_iter().zip(online) {
            // One slot per push; the slots of jobs not found go back when `permits` drops.
            let permit = permits.split(1).expect("a slot was taken for every job claimed");
            let (app, done, caps) = (app.clone(), done_tx.clone(), caps.clone());
            tokio::spawn(async move {
                let outcome = handle(&app, &job, online, &caps).await;
                let _ = done
                    .send(PushDone {
                        device_id: job.device_id(),
                        conversation_id: job.conversation_id,
                        seq: job.seq,
                        registered_at: job.registration.registered_at,
                        outcome,
                    })
                    .await;
                drop(permit);
            });
        }
    }
}

async fn sleep_or_wake(app: &App, d: Duration) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        () = app.push.wake.notified() => {}
    }
}

/// Writes outcomes in batches.
async fn finish(app: Arc<App>, mut rx: mpsc::Receiver<PushDone>) {
    let mut batch = Vec::with_capacity(FINISH_BATCH);
    while rx.recv_many(&mut batch, FINISH_BATCH).await > 0 {
        if let Err(e) = app.store.finish_pushes(std::mem::take(&mut batch)).await {
            // The leases run out and the pushes are claimed again: a repeat, never a loss.
            tracing::warn!(error = %e, "cannot record push outcomes");
        }
    }
}

/// One claimed push: suppressed, deferred by the device cap, or sent, and what came of it.
async fn handle(app: &App, job: &PushJob, online: bool, caps: &DeviceCaps) -> PushOutcome {
    let pusher = &app.push;
    let standing = Standing { seq: job.seq, online, acknowledged: job.acknowledged, read: job.read };
    if let Err(why) = push::still_due(&standing) {
        pusher.metrics.suppressed(why.as_str());
        return PushOutcome::Suppressed;
    }
    let now = parley_core::now_ms();
    if let Err(due_at) = caps.take(job.device_id(), now, app.config.push_device_per_minute) {
        pusher.metrics.suppressed("device_cap");
        return PushOutcome::Deferred { due_at };
    }
    let reg = &job.registration;
    let Some(provider) = pusher.providers.get(reg.kind) else {
        let failure = PushFailure { at: now, status: 0, reason: "no credentials for this kind".into() };
        return PushOutcome::Failed { failure };
    };
    let topic = pusher.topic(job.device_id(), job.conversation_id);
    let payload =
        Payload::Message { conversation_id: job.conversation_id, seq: job.seq, unread_count: job.unread_count };
    let delivery = provider
        .send(&Push { device: job.device_id(), address: &reg.address, payload, topic: &topic, ttl: pusher.ttl })
        .await;
    let at = parley_core::now_ms();
    pusher.metrics.latency.observe(((at - job.queued_at).max(0) as u64).saturating_mul(1000));
    let outcome = super::outcome(&delivery, reg, job.attempts, at, app.config.push_coalesce_ms as i64);
    pusher.record(provider.name(), &delivery, &outcome, job.merged);
    outcome
}

/// The per-device cap: at most N pushes per device per minute on this node, so a flood of
/// messages across many conversations never becomes a flood of pushes.
#[derive(Default)]
struct DeviceCaps {
    /// device → (minute, pushes in it).
    windows: Mutex<HashMap<DeviceId, (i64, u32)>>,
}

impl DeviceCaps {
    /// Takes one push; `Err(when)` if the device's minute is full.
    fn take(&self, device: DeviceId, now: i64, per_minute: u32) -> Result<(), i64> {
        let minute = now / 60_000;
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() > 100_000 {
            w.retain(|_, (m, _)| *m == minute);
        }
        let e = w.entry(device).or_insert((minute, 0));
        if e.0 != minute {
            *e = (minute, 0);
        }
        if e.1 >= per_minute.max(1) {
            return Err((minute + 1) * 60_000);
        }
        e.1 += 1;
        Ok(())
    }
}

//! Push notifications for devices with no open connection: the providers the binary hands over,
//! the worker that sends what the store queued ([`worker`]), and their metrics.
//!
//! Who is pushed is decided twice, by `parley_core::push`: in the message's own commit (the
//! store queues a row per device whose member settings let it through) and just before the push
//! leaves (not if the device is connected, has acknowledged the seq, or the user has read it).

mod metrics;
pub(crate) mod worker;

use std::sync::Arc;
use std::time::Duration;

use parley_core::ids::{ConversationId, DeviceId};
use parley_core::push::{self, PushFailure, PushKind, PushRegistration};
use parley_push::web::WebPush;
use parley_push::{Delivery, Payload, Provider, Push, Topics};
use parley_store::PushOutcome;

pub(crate) use metrics::PushMetrics;

/// The provider clients this server may use, built by the binary from its settings. A kind
/// with no client is refused at registration.
#[derive(Default)]
pub struct PushProviders {
    /// Web Push and UnifiedPush (always available: the VAPID key is the server's own).
    pub web: Option<Arc<WebPush>>,
    pub apns: Option<Arc<dyn Provider>>,
    pub fcm: Option<Arc<dyn Provider>>,
}

impl PushProviders {
    pub(crate) fn get(&self, kind: PushKind) -> Option<&dyn Provider> {
        match kind {
            PushKind::WebPush | PushKind::UnifiedPush => self.web.as_deref().map(|w| w as &dyn Provider),
            PushKind::Apns => self.apns.as_deref(),
            PushKind::Fcm => self.fcm.as_deref(),
        }
    }
}

/// What handlers and the worker share.
pub(crate) struct Pusher {
    pub providers: PushProviders,
    pub topics: Topics,
    pub metrics: PushMetrics,
    /// Woken when a commit queued pushes.
    pub wake: tokio::sync::Notify,
    /// The lease owner name of this node.
    pub node: String,
    pub ttl: Duration,
}

impl Pusher {
    /// The topic key is made once per deployment and kept in the store, so topics (and the
    /// providers' collapsing) stay the same across restarts and nodes.
    pub(crate) async fn new(
        config: &crate::Config,
        store: &dyn parley_store::Store,
        providers: PushProviders,
        node: String,
    ) -> Result<Pusher, parley_store::StoreError> {
        let secret = store.secret("push_topic_key", rand::random::<[u8; 32]>().to_vec()).await?;
        Ok(Pusher {
            providers,
            topics: Topics::new(&secret),
            metrics: PushMetrics::default(),
            wake: tokio::sync::Notify::new(),
            node,
            ttl: Duration::from_secs(config.push_ttl_secs),
        })
    }

    /// Sends one push now, outside the queue (`POST /v1/push/test`): the provider's name (none
    /// when this server has no credentials for the kind) and its answer.
    pub(crate) async fn send_test(&self, reg: &PushRegistration) -> (Option<&'static str>, Delivery) {
        let Some(provider) = self.providers.get(reg.kind) else {
            return (None, Delivery::Rejected { status: 0, reason: "no credentials for this kind".into() });
        };
        let topic = self.topics.topic(reg.device_id, ConversationId(0));
        let push =
            Push { device: reg.device_id, address: &reg.address, payload: Payload::Test, topic: &topic, ttl: self.ttl };
        (Some(provider.name()), provider.send(&push).await)
    }

    /// A commit's decisions: counts what settings held back, wakes the worker for what it queued.
    pub(crate) fn decided(&self, d: parley_store::PushDecisions) {
        for (why, n) in d.suppressed() {
            self.metrics.suppressed_by(why.as_str(), u64::from(n));
        }
        if d.queued > 0 {
            self.wake.notify_one();
        }
    }

    /// Counts an answer and logs what an operator should see (never a token or an endpoint).
    pub(crate) fn record(&self, provider: &'static str, d: &Delivery, outcome: &PushOutcome, merged: u32) {
        match outcome {
            PushOutcome::Sent { .. } => {
                self.metrics.sent(provider);
                self.metrics.coalesced.fetch_add(u64::from(merged), std::sync::atomic::Ordering::Relaxed);
            }
            PushOutcome::Invalidated { .. } => {
                self.metrics.failed(provider, d.status());
                self.metrics.invalidated(provider);
                tracing::info!(provider, status = d.status(), "push registration invalidated");
            }
            PushOutcome::Failed { failure } => {
                self.metrics.failed(provider, d.status());
                tracing::warn!(provider, status = failure.status, reason = %failure.reason, "push refused or given up");
            }
            PushOutcome::Retry { .. } => self.metrics.failed(provider, d.status()),
            PushOutcome::Suppressed | PushOutcome::Deferred { .. } => {}
        }
    }

    pub(crate) fn topic(&self, device: DeviceId, conv: ConversationId) -> String {
        self.topics.topic(device, conv)
    }
}

/// What a provider's answer to a push means for the queue and the registration, the same for a
/// queued push and a test push: accepted opens the merge window (`window_ms`); "gone"
/// invalidates, unless the provider dates the death before the registration (a token registered
/// again after APNs saw it die is alive); 429/5xx/no answer retry with backoff or `Retry-After`
/// until [`push::MAX_ATTEMPTS`]; anything else is a refusal.
pub(crate) fn outcome(d: &Delivery, reg: &PushRegistration, attempts: u32, at: i64, window_ms: i64) -> PushOutcome {
    let failure = |status: u16, reason: &str| PushFailure { at, status, reason: reason.to_owned() };
    match d {
        Delivery::Delivered => PushOutcome::Sent { at, window_end: at + window_ms },
        Delivery::Gone { status, reason, at: died } => {
            if died.is_some_and(|t| t < reg.registered_at) {
                PushOutcome::Failed { failure: failure(*status, reason) }
            } else {
                PushOutcome::Invalidated { failure: failure(*status, reason) }
            }
        }
        Delivery::Retry { status, reason, retry_after } => {
            let attempt = attempts + 1;
            if attempt >= push::MAX_ATTEMPTS {
                return PushOutcome::Failed { failure: failure(*status, reason) };
            }
            let wait = push::retry_delay_ms(attempt, retry_after.map(|d| d.as_millis() as u64));
            PushOutcome::Retry { due_at: at + wait as i64, failure: failure(*status, reason) }
        }
        Delivery::Rejected { status, reason } => PushOutcome::Failed { failure: failure(*status, reason) },
    }
}

#[cfg(test)]
mod tests {
    use parley_core::ids::UserId;
    use parley_core::push::PushAddress;

    use super::*;

    fn reg() -> PushRegistration {
        PushRegistration {
            device_id: DeviceId(1),
            user_id: UserId(2),
            kind: PushKind::Apns,
            address: PushAddress::Token { token: "ab".into(), sandbox: false },
            registered_at: 1_000,
            last_success_at: None,
            last_error: None,
            invalidated_at: None,
        }
    }

    #[test]
    fn answers_map_to_queue_outcomes() {
        let r = reg();
        assert_eq!(
            outcome(&Delivery::Delivered, &r, 0, 5_000, 2_000),
            PushOutcome::Sent { at: 5_000, window_end: 7_000 }
        );
        let gone = |at| Delivery::Gone { status: 410, reason: "Unregistered".into(), at };
        assert!(matches!(outcome(&gone(None), &r, 0, 5_000, 0), PushOutcome::Invalidated { .. }));
        assert!(matches!(outcome(&gone(Some(1_000)), &r, 0, 5_000, 0), PushOutcome::Invalidated { .. }));
        assert!(
            matches!(outcome(&gone(Some(999)), &r, 0, 5_000, 0), PushOutcome::Failed { .. }),
            "died before it was registered again"
        );
        let retry = |after| Delivery::Retry { status: 429, reason: String::new(), retry_after: after };
        assert!(matches!(
            outcome(&retry(Some(Duration::from_secs(3))), &r, 0, 5_000, 0),
            PushOutcome::Retry { due_at: 8_000, .. }
        ));
        assert!(matches!(outcome(&retry(None), &r, 2, 5_000, 0), PushOutcome::Retry { due_at: 9_000, .. }));
        assert!(matches!(outcome(&retry(None), &r, push::MAX_ATTEMPTS - 1, 5_000, 0), PushOutcome::Failed { .. }));
        let refused = Delivery::Rejected { status: 400, reason: "BadTopic".into() };
        assert!(matches!(outcome(&refused, &r, 0, 5_000, 0), PushOutcome::Failed { failure } if failure.status == 400));
    }
}

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

use parley_core::ids::{ConversationId, DeviceId, Seq};
use parley_core::push::{PushKind, PushRegistration};
use parley_push::web::WebPush;
use parley_push::{Delivery, Payload, Provider, Push, Topics};

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

    /// Sends one push now, outside the queue (`POST /v1/push/test`).
    pub(crate) async fn send_test(&self, reg: &PushRegistration) -> Delivery {
        let Some(provider) = self.providers.get(reg.kind) else {
            return Delivery::Rejected { status: 0, reason: "no credentials for this kind".into() };
        };
        let payload = Payload { conversation_id: ConversationId(0), seq: Seq(0), unread_count: 0 };
        let topic = self.topics.topic(reg.device_id, ConversationId(0));
        let push = Push { device: reg.device_id, address: &reg.address, payload, topic: &topic, ttl: self.ttl };
        provider.send(&push).await
    }

    pub(crate) fn topic(&self, device: DeviceId, conv: ConversationId) -> String {
        self.topics.topic(device, conv)
    }
}

//! The state every handler shares, passed down explicitly (no globals).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parley_router::{ClusterBus, Router};
use parley_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Passwords;
use crate::config::Config;
use crate::members::MemberCache;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::ratelimit::RateLimiter;
use crate::routed::Routed;

pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub router: Arc<dyn Router>,
    /// Presence and invalidations across nodes; `None` in embedded mode.
    pub cluster: Option<Arc<dyn ClusterBus>>,
    /// Sends waiting for their message to be routed (cluster only; see `routed`).
    pub routed: Option<Arc<Routed>>,
    pub passwords: Passwords,
    pub rate: RateLimiter,
    pub members: MemberCache,
    pub metrics: Metrics,
    pub presence: Arc<Presence>,
    /// Cancelled when the server starts draining.
    pub shutdown: CancellationToken,
    /// WebSocket connection tasks, awaited on shutdown.
    pub connections: TaskTracker,
    pub next_conn_id: AtomicU64,
}

impl App {
    pub async fn new(
        config: Config,
        store: Arc<dyn Store>,
        router: Arc<dyn Router>,
        cluster: Option<Arc<dyn ClusterBus>>,
        shutdown: CancellationToken,
        connections: TaskTracker,
    ) -> Arc<App> {
        Arc::new(App {
            passwords: Passwords::new(config.password_hash_concurrency).await,
            rate: RateLimiter::new(config.send_rate_per_sec, config.send_burst),
            members: MemberCache::new(store.clone()),
            metrics: Metrics::default(),
            presence: Arc::new(Presence::new(
                std::time::Duration::from_millis(config.presence_grace_ms),
                cluster.clone(),
            )),
            routed: cluster.as_ref().map(|_| Arc::new(Routed::default())),
            cluster,
            config,
            store,
            router,
            shutdown,
            connections,
            next_conn_id: AtomicU64::new(1),
        })
    }
}

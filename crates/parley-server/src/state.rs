//! The state every handler shares, passed down explicitly (no globals).
//!
//! `App` only assembles: each service in it (member cache, presence, rate limiter, ...) is built
//! here with the store, router, settings and task tracker it needs, and never sees `App` itself,
//! so the services do not depend on one another through it.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parley_router::{ClusterBus, Router};
use parley_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::members::MemberCache;
use crate::metrics::Metrics;
use crate::passwords::Passwords;
use crate::presence::Presence;
use crate::ratelimit::RateLimiter;
use crate::routed::Routed;

pub(crate) struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub router: Arc<dyn Router>,
    /// Presence and invalidations across nodes; `None` in embedded mode.
    pub cluster: Option<Arc<dyn ClusterBus>>,
    /// Sends waiting for their message to be routed (cluster only; see `routed`).
    pub routed: Option<Arc<Routed>>,
    pub passwords: Passwords,
    pub rate: Arc<RateLimiter>,
    /// Upload starts, per user.
    pub uploads: Arc<RateLimiter<parley_core::ids::UserId>>,
    /// Where uploads live.
    pub media: Arc<dyn parley_media::MediaStore>,
    pub media_metrics: crate::media::MediaMetrics,
    pub members: MemberCache,
    pub metrics: Metrics,
    pub presence: Arc<Presence>,
    pub push: crate::push::Pusher,
    /// Cancelled when the server starts draining.
    pub shutdown: CancellationToken,
    /// WebSocket connection tasks, awaited on shutdown.
    pub connections: TaskTracker,
    /// The short-lived tasks handlers, fanout and presence start (presence grace timers,
    /// conversation frames, presence rechecks, cluster follow-ups, device activity writes), kept
    /// apart from `connections` so shutdown first drains the connections (which start more of
    /// these as they close) and then waits here, within the same deadline, while the store still
    /// takes writes. Grace timers end as soon as draining starts. Fanout's long-lived workers are
    /// its own (they stop with it), not here.
    pub tasks: TaskTracker,
    pub next_conn_id: AtomicU64,
}

/// What the app runs on: the backends, with the push sender built over them.
pub(crate) struct Parts {
    pub store: Arc<dyn Store>,
    pub router: Arc<dyn Router>,
    pub cluster: Option<Arc<dyn ClusterBus>>,
    pub push: crate::push::Pusher,
    pub media: Arc<dyn parley_media::MediaStore>,
}

impl App {
    pub(crate) async fn new(
        config: Config,
        parts: Parts,
        shutdown: CancellationToken,
        connections: TaskTracker,
    ) -> Arc<App> {
        let Parts { store, router, cluster, push, media } = parts;
        let tasks = TaskTracker::new();
        Arc::new(App {
            passwords: Passwords::new(config.password_hash_concurrency).await,
            rate: Arc::new(RateLimiter::new(config.send_rate_per_sec, config.send_burst)),
            uploads: Arc::new(RateLimiter::new(
                f64::from(config.media_uploads_per_minute) / 60.0,
                config.media_upload_burst,
            )),
            media,
            media_metrics: Default::default(),
            members: MemberCache::new(store.clone()),
            metrics: Metrics::default(),
            presence: Arc::new(Presence::new(
                std::time::Duration::from_millis(config.presence_grace_ms),
                cluster.clone(),
                store.clone(),
                tasks.clone(),
                shutdown.clone(),
            )),
            routed: cluster.as_ref().map(|_| Arc::new(Routed::default())),
            push,
            cluster,
            config,
            store,
            router,
            shutdown,
            connections,
            tasks,
            next_conn_id: AtomicU64::new(1),
        })
    }
}

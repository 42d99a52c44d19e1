//! The Parley server: REST API, WebSocket gateway, message service and fanout, assembled on
//! axum. [`run`] takes a bound listener and a shutdown token, so tests and the binary start it
//! the same way.

mod auth;
mod cluster;
mod config;
mod convert;
mod e2ee;
mod error;
mod fanout;
mod json;
mod media;
mod members;
mod metrics;
mod passwords;
mod presence;
mod push;
mod ratelimit;
mod routed;
mod routes;
mod service;
mod state;
mod ws;

use parley_core::ids::UserId;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use parley_router::{ClusterBus, Router};
use parley_store::{Store, StoreEvent};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use push::PushProviders;
use state::App;

/// Events queued between the store's writer and the fanout task; a backend is opened with the
/// sending half of a channel this long (see [`event_channel`]).
const EVENT_QUEUE: usize = 1024;

/// The channel a store publishes its [`StoreEvent`]s on and [`run`] consumes.
pub fn event_channel() -> (parley_store::EventSender, mpsc::Receiver<Vec<StoreEvent>>) {
    mpsc::channel(EVENT_QUEUE)
}

/// What the server runs on, chosen and built by its caller (the binary, or a test).
pub struct Backends {
    pub store: Arc<dyn Store>,
    /// The receiving half of the channel `store` publishes its events on.
    pub events: mpsc::Receiver<Vec<StoreEvent>>,
    pub router: Arc<dyn Router>,
    /// Presence and invalidations across nodes; `None` in embedded mode.
    pub cluster: Option<Arc<dyn ClusterBus>>,
    /// What these are, for the start log (e.g. `SQLite in ./data`).
    pub description: String,
    /// The push provider clients.
    pub push: PushProviders,
    /// This node's name (the owner of the push leases it takes).
    pub node: String,
    /// Where uploads live.
    pub media: Arc<dyn parley_media::MediaStore>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the media store is not usable: {0}")]
    Media(#[from] parley_media::MediaError),
    #[error("cannot read the push secrets from the store: {0}")]
    Secrets(#[from] parley_store::StoreError),
}

/// Runs the server on `listener` with `backends` until `shutdown` is cancelled, then drains:
/// stops accepting, closes WebSockets with 1001, lets in-flight writes finish, stops the store
/// and then the router, all within one deadline, `config.shutdown_timeout_ms` from the moment
/// `shutdown` is cancelled.
pub async fn run(
    config: Config,
    backends: Backends,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let Backends { store, events, router, cluster, description, push, node, media } = backends;
    // A missing bucket or an unwritable directory stops the start, not the first upload.
    media.check().await?;
    media.sweep().await?;
    let tracker = TaskTracker::new();
    let pusher = push::Pusher::new(&config, &*store, push, node).await?;
    let parts =
        state::Parts { store: store.clone(), router: router.clone(), cluster: cluster.clone(), push: pusher, media };
    let app = App::new(config, parts, shutdown.clone(), tracker.clone()).await;

    // The server's long-lived loops; stopped (aborted, then awaited) last in the drain. Shorter
    // tasks they start run on `app.tasks`.
    let mut background = tokio::task::JoinSet::new();
    if let Some(events) = cluster.as_ref().and_then(|c| c.take_events()) {
        background.spawn(cluster::listen(app.clone(), events));
    }
    background.spawn(fanout::run(app.clone(), events));
    background.spawn(ratelimit::sweep(app.rate.clone(), app.uploads.clone()));
    background.spawn(media::gc::run(app.clone()));
    background.spawn(push::worker::run(app.clone()));
    // The first probes are taken before the first request, so `/metrics` always has every
    // dependency's gauges (a probe loop that had not run yet once left a gap a test could see).
    probe_once(&app).await;
    background.spawn(health_probes(app.clone()));
    tracing::info!(addr = %listener.local_addr()?, backends = %description, "parley is listening");

    let timeout = Duration::from_millis(app.config.shutdown_timeout_ms);
    // Frames are small and latency matters: no Nagle delay on any socket.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let http =
        axum::serve(listener, routes::router(app.clone())).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let mut http = std::pin::pin!(http.into_future());
    // `http` ends only after `shutdown` (or on an I/O error); it may end in the same poll.
    let served = tokio::select! {
        served = &mut http => Some(served),
        () = shutdown.cancelled() => None,
    };
    // The deadline starts when draining does, and every step below shares it.
    let deadline = Instant::now() + timeout;
    tracing::info!("draining connections");
    // In-flight HTTP requests (a REST send waiting for its commit, say) finish first.
    match served {
        Some(served) => served?,
        None => match tokio::time::timeout_at(deadline, &mut http).await {
            Ok(served) => served?,
            Err(_) => tracing::warn!("HTTP requests did not finish within the shutdown timeout"),
        },
    }
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait()).await.is_err() {
        tracing::warn!("connections did not close within the shutdown timeout");
    }
    // What handlers and fanout started (activity stamps, presence rechecks, conversation
    // frames) finishes while the store still takes writes; grace timers end at the drain's start.
    app.tasks.close();
    if tokio::time::timeout_at(deadline, app.tasks.wait()).await.is_err() {
        tracing::warn!("background tasks did not finish within the shutdown timeout");
    }
    if tokio::time::timeout_at(deadline, app.presence.flush_last_seen()).await.is_err() {
        tracing::warn!("last-seen times were not all written within the shutdown timeout");
    }
    // In-flight writes finish here: the writer commits what is queued, then stops.
    if tokio::time::timeout_at(deadline, store.shutdown()).await.is_err() {
        tracing::warn!("the store did not stop within the shutdown timeout");
    }
    // Last: what the drain queued for other nodes goes out, then the router stops.
    if tokio::time::timeout_at(deadline, router.shutdown()).await.is_err() {
        tracing::warn!("the router did not stop within the shutdown timeout");
    }
    // The long-lived loops (fanout with its workers, the sweeper, the probes) stop last.
    background.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// How often the dependencies' round trips are measured for `/metrics`.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Measures each dependency's round trip (the store's: one indexed read; in a cluster, NATS's
/// and Redis's too) for `/metrics`, so an operator sees a slow or unreachable dependency before
/// users do.
async fn health_probes(app: Arc<App>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.tick().await; // the first round ran before serving
    loop {
        tick.tick().await;
        probe_once(&app).await;
    }
}

/// One round of probes, recorded for `/metrics`.
async fn probe_once(app: &App) {
    let started = std::time::Instant::now();
    let up = tokio::time::timeout(PROBE_INTERVAL, app.store.user(UserId(0))).await.is_ok_and(|r| r.is_ok());
    app.metrics.dependency("store", up, started.elapsed());
    let started = std::time::Instant::now();
    for p in app.router.probe().await {
        app.metrics.dependency(p.dependency, p.result.is_ok(), p.result.unwrap_or_else(|_| started.elapsed()));
    }
}

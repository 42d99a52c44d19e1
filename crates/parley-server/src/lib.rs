//! The Parley server: REST API, WebSocket gateway, message service and fanout, assembled on
//! axum. [`run`] takes a bound listener and a shutdown token, so tests and the binary start it
//! the same way.

pub mod auth;
mod cluster;
pub mod config;
mod convert;
pub mod error;
mod fanout;
mod json;
mod members;
pub mod metrics;
mod passwords;
mod presence;
mod ratelimit;
mod routed;
mod routes;
mod service;
mod state;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use parley_store::{PgStore, SqliteStore, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use state::App;

/// Events queued between the store's writer and the fanout task.
const EVENT_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("storage: {0}")]
    Store(#[from] parley_store::StoreError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("cluster: {0}")]
    Cluster(#[from] parley_router::cluster::ClusterError),
}

/// Runs the server on `listener` until `shutdown` is cancelled, then drains: stops accepting,
/// closes WebSockets with 1001, lets in-flight writes finish and stops the store, all within
/// `config.shutdown_timeout_ms`.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), ServeError> {
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
    let store: Arc<dyn Store> = match &config.store {
        Some(url) => Arc::new(connect_postgres(&config, url, events_tx).await?),
        None => Arc::new(SqliteStore::open(&config.data_dir, config.node_number(), events_tx)?),
    };
    // A cluster router when NATS and Redis are configured, else the in-process one.
    let routers = cluster::Routers::connect(&config).await?;
    let tracker = TaskTracker::new();
    let app =
        App::new(config, store.clone(), routers.router.clone(), routers.bus(), shutdown.clone(), tracker.clone()).await;

    let cluster_events = routers
        .cluster
        .as_ref()
        .and_then(|c| parley_router::ClusterBus::take_events(c.as_ref()))
        .map(|events| tokio::spawn(cluster::listen(app.clone(), events)));
    let fanout = tokio::spawn(fanout::run(app.clone(), events_rx));
    let sweeper = tokio::spawn(ratelimit::sweep(app.clone()));
    let probes = tokio::spawn(health_probes(app.clone()));
    match (&app.config.store, app.config.clustered()) {
        (Some(_), true) => tracing::info!(addr = %listener.local_addr()?, node = %app.config.node_id,
            cluster = %app.config.cluster, "parley is listening (PostgreSQL, NATS, Redis)"),
        (Some(_), false) => tracing::info!(addr = %listener.local_addr()?, "parley is listening (PostgreSQL)"),
        (None, _) => tracing::info!(addr = %listener.local_addr()?, data_dir = %app.config.data_dir.display(),
            "parley is listening"),
    }

    let deadline = Duration::from_millis(app.config.shutdown_timeout_ms);
    // Frames are small and latency matters: no Nagle delay on any socket.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let http =
        axum::serve(listener, routes::router(app.clone())).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    http.await?;
    tracing::info!("draining connections");
    tracker.close();
    if tokio::time::timeout(deadline, tracker.wait()).await.is_err() {
        tracing::warn!("connections did not close within the shutdown timeout");
    }
    app.presence.flush_last_seen().await;
    // In-flight writes finish here: the writer commits what is queued, then stops.
    if tokio::time::timeout(deadline, store.shutdown()).await.is_err() {
        tracing::warn!("the store did not stop within the shutdown timeout");
    }
    // Last: what the drain queued for other nodes goes out, then the router stops.
    if let Some(c) = &routers.cluster {
        c.shutdown().await;
    }
    sweeper.abort();
    probes.abort();
    fanout.abort();
    if let Some(t) = cluster_events {
        t.abort();
    }
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
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        let up = tokio::time::timeout(PROBE_INTERVAL, app.store.user(0)).await.is_ok_and(|r| r.is_ok());
        app.metrics.dependency("store", up, started.elapsed());
        let started = std::time::Instant::now();
        for p in app.router.probe().await {
            app.metrics.dependency(p.dependency, p.result.is_ok(), p.result.unwrap_or_else(|_| started.elapsed()));
        }
    }
}

/// Connects to PostgreSQL as this node. A numeric `node_id` is the node number, and a second node
/// with it is refused. A named node starts from its name's hash and takes the next number no
/// live node holds (ids only need a number unique among live nodes: each node also starts its
/// ids above every stored one).
async fn connect_postgres(
    config: &Config,
    url: &str,
    events: parley_store::EventSender,
) -> Result<PgStore, ServeError> {
    let first = config.node_number();
    let named = config.node_id.parse::<u16>().is_err();
    let mut n = first;
    loop {
        match PgStore::connect(url, n, config.migrate_on_start, events.clone()).await {
            // The store's refusal names the cause; only a taken number is worth another try.
            Err(parley_store::StoreError::Unavailable(m)) if named && m.contains("in use by another node") => {
                n = (n + 1) % 1024;
                if n == first {
                    let all = "all 1,024 node numbers are in use".to_string();
                    return Err(parley_store::StoreError::Unavailable(all).into());
                }
                tracing::info!(node = %config.node_id, number = n, "node number taken; trying the next");
            }
            other => return Ok(other?),
        }
    }
}

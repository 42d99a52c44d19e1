//! `/healthz` (the process answers), `/readyz` (it can serve: storage reachable, in a cluster
//! NATS and Redis too, not draining) and `/metrics`.

use parley_core::ids::UserId;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use parley_proto::rest::Health;

use crate::state::App;

pub(super) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

pub(super) async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    if app.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "draining".into() }));
    }
    // Each check is a fresh probe, news for `/metrics` too.
    let started = std::time::Instant::now();
    let store = app.store.user(UserId(0)).await;
    app.metrics.dependency("store", store.is_ok(), started.elapsed());
    if let Err(e) = store {
        tracing::warn!(error = %e, "not ready: store");
        return (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "store unavailable".into() }));
    }
    let started = std::time::Instant::now();
    let probes = app.router.probe().await;
    for p in &probes {
        app.metrics.dependency(p.dependency, p.result.is_ok(), *p.result.as_ref().unwrap_or(&started.elapsed()));
    }
    for p in probes {
        if let Err(e) = p.result {
            tracing::warn!(error = %e, dependency = p.dependency, "not ready");
            let status = format!("{} unavailable", p.dependency);
            return (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status }));
        }
    }
    (StatusCode::OK, Json(Health { status: "ready".into() }))
}

pub(super) async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let mut out = app.metrics.render(app.router.connection_count(), &app.store.writer_stats());
    app.push.metrics.render(&mut out);
    app.media_metrics.render(&mut out);
    app.push.metrics.render_latency(&mut out);
    if app.cluster.is_some() {
        crate::metrics::render_router(&mut out, &app.router.stats());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

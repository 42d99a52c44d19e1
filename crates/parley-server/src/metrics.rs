//! What the server exposes at `/metrics`, in Prometheus text format: counters, a few
//! histograms (latencies in seconds), and the store's group-commit statistics.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parley_core::histogram::{COUNTS, Histogram, MICROS};
use parley_proto::ErrorCode;
use parley_store::WriterStats;

pub(crate) struct Metrics {
    pub connections_opened: AtomicU64,
    pub sends: AtomicU64,
    pub sends_duplicate: AtomicU64,
    pub messages_persisted: AtomicU64,
    pub deliveries: AtomicU64,
    pub replayed: AtomicU64,
    pub too_slow_closes: AtomicU64,
    pub rate_limited: AtomicU64,
    /// WebSocket `error` frames sent, by code (indexed like [`ErrorCode::ALL`]).
    errors: [AtomicU64; ErrorCode::ALL.len()],
    /// REST error responses, by code.
    rest_errors: [AtomicU64; ErrorCode::ALL.len()],
    /// Microseconds from a send being queued to the store to it being durable.
    pub send_to_persist: Histogram,
    /// Microseconds fanout spends handing one message to the router.
    pub fanout: Histogram,
    /// Frames waiting in a connection's outbound queue, sampled whenever it writes.
    pub queue_depth: Histogram,
    /// The last probe of each dependency (store, and in a cluster NATS and Redis): whether it
    /// answered, and its round trip.
    dependencies: std::sync::Mutex<std::collections::BTreeMap<&'static str, (bool, std::time::Duration)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections_opened: AtomicU64::new(0),
            sends: AtomicU64::new(0),
            sends_duplicate: AtomicU64::new(0),
            messages_persisted: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            too_slow_closes: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            rest_errors: std::array::from_fn(|_| AtomicU64::new(0)),
            send_to_persist: Histogram::new(MICROS),
            fanout: Histogram::new(MICROS),
            queue_depth: Histogram::new(COUNTS),
            dependencies: Default::default(),
        }
    }
}

impl Metrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|&c| c == code) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Records a probe of a dependency.
    pub(crate) fn dependency(&self, name: &'static str, up: bool, round_trip: std::time::Duration) {
        self.dependencies.lock().unwrap_or_else(|e| e.into_inner()).insert(name, (up, round_trip));
    }

    pub(crate) fn rest_error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|&c| c == code) {
            self.rest_errors[i].fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn render(&self, connections_current: usize, store: &WriterStats) -> String {
        let mut out = String::with_capacity(8192);
        let counters: [(&str, &str, &AtomicU64); 8] = [
            ("connections_opened_total", "WebSocket connections authenticated.", &self.connections_opened),
            ("sends_total", "Send requests accepted for processing.", &self.sends),
            (
                "sends_duplicate_total",
                "Sends answered with an existing message (idempotent repeats).",
                &self.sends_duplicate,
            ),
            ("messages_persisted_total", "Log entries committed.", &self.messages_persisted),
            ("deliveries_total", "Message frames written to sockets live.", &self.deliveries),
            ("replayed_total", "Message frames written to sockets during sync.", &self.replayed),
            ("too_slow_closes_total", "Connections closed with 4009.", &self.too_slow_closes),
            ("rate_limited_total", "Requests refused with rate_limited.", &self.rate_limited),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP parley_{name} {help}\n# TYPE parley_{name} counter\nparley_{name} {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP parley_errors_total WebSocket error frames sent, by code.\n# TYPE parley_errors_total counter"
        );
        for (code, v) in ErrorCode::ALL.iter().zip(&self.errors) {
            let _ = writeln!(out, "parley_errors_total{{code=\"{}\"}} {}", code.as_str(), v.load(Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP parley_http_errors_total REST error responses, by code.\n# TYPE parley_http_errors_total counter"
        );
        for (code, v) in ErrorCode::ALL.iter().zip(&self.rest_errors) {
            let _ = writeln!(out, "parley_http_errors_total{{code=\"{}\"}} {}", code.as_str(), v.load(Relaxed));
        }
        let deps = self.dependencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if !deps.is_empty() {
            let _ = writeln!(
                out,
                "# HELP parley_dependency_up Whether the dependency answered its last probe.\n\
                 # TYPE parley_dependency_up gauge"
            );
            for (name, (up, _)) in &deps {
                let _ = writeln!(out, "parley_dependency_up{{dependency=\"{name}\"}} {}", u8::from(*up));
            }
            let _ = writeln!(
                out,
                "# HELP parley_dependency_round_trip_seconds The dependency's last probe round trip.\n\
                 # TYPE parley_dependency_round_trip_seconds gauge"
            );
            for (name, (_, rtt)) in &deps {
                let _ = writeln!(
                    out,
                    "parley_dependency_round_trip_seconds{{dependency=\"{name}\"}} {}",
                    rtt.as_secs_f64()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP parley_connections Open authenticated WebSocket connections.\n# TYPE parley_connections gauge\nparley_connections {connections_current}"
        );
        histogram(
            &mut out,
            "send_to_persist_seconds",
            "Time from a send being queued to it being durable.",
            &self.send_to_persist,
            1e-6,
        );
        histogram(
            &mut out,
            "fanout_seconds",
            "Time to hand one message to every recipient's queue.",
            &self.fanout,
            1e-6,
        );
        histogram(
            &mut out,
            "outbound_queue_depth",
            "Frames queued for a connection when it writes.",
            &self.queue_depth,
            1.0,
        );
        histogram(&mut out, "commit_batch_size", "Jobs per group commit.", &store.batch_size, 1.0);
        histogram(
            &mut out,
            "commit_seconds",
            "Time of one group commit, transaction to fsync.",
            &store.commit_micros,
            1e-6,
        );
        out
    }
}

/// Appends the cluster router's counters (cluster mode only).
pub(crate) fn render_router(out: &mut String, s: &parley_router::RouterStats) {
    let counters = [
        (
            "cluster_node_messages_published_total",
            "Messages published to other nodes (each carrying frames for many recipients).",
            s.node_messages_published,
        ),
        ("cluster_node_messages_received_total", "Messages received from other nodes.", s.node_messages_received),
        (
            "cluster_frames_dropped_total",
            "Frames for other nodes dropped while NATS was unreachable or the publish queue full.",
            s.frames_dropped,
        ),
        ("cluster_directory_lookups_total", "Batched session-directory lookups in Redis.", s.directory_lookups),
        ("cluster_jobs_published_total", "Large-conversation fanout jobs queued on JetStream.", s.jobs_published),
        ("cluster_jobs_done_total", "Fanout jobs this node carried out.", s.jobs_done),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(out, "# HELP parley_{name} {help}\n# TYPE parley_{name} counter\nparley_{name} {v}");
    }
}

/// Appends one histogram; `scale` turns recorded units into the exposed ones.
pub(crate) fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram, scale: f64) {
    let s = h.snapshot();
    let _ = writeln!(out, "# HELP parley_{name} {help}\n# TYPE parley_{name} histogram");
    for (bound, count) in &s.buckets {
        match bound {
            Some(b) => {
                let _ = writeln!(out, "parley_{name}_bucket{{le=\"{}\"}} {count}", *b as f64 * scale);
            }
            None => {
                let _ = writeln!(out, "parley_{name}_bucket{{le=\"+Inf\"}} {count}");
            }
        }
    }
    let _ = writeln!(out, "parley_{name}_sum {}\nparley_{name}_count {}", s.sum as f64 * scale, s.count);
}

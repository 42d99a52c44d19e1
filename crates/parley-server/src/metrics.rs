//! Counters the server exposes at `/metrics` in Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    pub connections_opened: AtomicU64,
    pub sends: AtomicU64,
    pub sends_duplicate: AtomicU64,
    pub messages_persisted: AtomicU64,
    pub deliveries: AtomicU64,
    pub replayed: AtomicU64,
    pub too_slow_closes: AtomicU64,
    pub rate_limited: AtomicU64,
    pub errors: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn render(&self, connections_current: usize) -> String {
        let mut out = String::with_capacity(2048);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP parley_{name} {help}\n# TYPE parley_{name} counter\nparley_{name} {v}");
        };
        counter(
            "connections_opened_total",
            "WebSocket connections authenticated.",
            self.connections_opened.load(Relaxed),
        );
        counter("sends_total", "Send requests accepted for processing.", self.sends.load(Relaxed));
        counter(
            "sends_duplicate_total",
            "Sends answered with an existing message (idempotent repeats).",
            self.sends_duplicate.load(Relaxed),
        );
        counter("messages_persisted_total", "Log entries committed.", self.messages_persisted.load(Relaxed));
        counter("deliveries_total", "Message frames written to sockets live.", self.deliveries.load(Relaxed));
        counter("replayed_total", "Message frames written to sockets during sync.", self.replayed.load(Relaxed));
        counter("too_slow_closes_total", "Connections closed with 4009.", self.too_slow_closes.load(Relaxed));
        counter("rate_limited_total", "Requests refused with rate_limited.", self.rate_limited.load(Relaxed));
        counter("errors_total", "Error replies sent.", self.errors.load(Relaxed));
        let _ = writeln!(
            out,
            "# HELP parley_connections Open authenticated WebSocket connections.\n# TYPE parley_connections gauge\nparley_connections {connections_current}"
        );
        out
    }
}

//! The push metrics: sent, coalesced, suppressed by reason, failed by provider and status,
//! invalidated, and the latency from `sent` to the provider's answer.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parley_core::histogram::{Histogram, MICROS};

pub(crate) struct PushMetrics {
    pub coalesced: AtomicU64,
    /// provider → pushes the provider accepted.
    sent: Mutex<BTreeMap<&'static str, u64>>,
    suppressed: Mutex<BTreeMap<&'static str, u64>>,
    /// (provider, status) → failures (status 0: no answer).
    failed: Mutex<BTreeMap<(&'static str, u16), u64>>,
    invalidated: Mutex<BTreeMap<&'static str, u64>>,
    /// Microseconds from the earliest message a push covers being committed to the provider's
    /// answer.
    pub latency: Histogram,
}

impl Default for PushMetrics {
    fn default() -> Self {
        PushMetrics {
            coalesced: AtomicU64::new(0),
            sent: Mutex::default(),
            suppressed: Mutex::default(),
            failed: Mutex::default(),
            invalidated: Mutex::default(),
            latency: Histogram::new(MICROS),
        }
    }
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
}

impl PushMetrics {
    pub(crate) fn sent(&self, provider: &'static str) {
        bump(&self.sent, provider);
    }

    pub(crate) fn suppressed(&self, reason: &'static str) {
        bump(&self.suppressed, reason);
    }

    pub(crate) fn suppressed_by(&self, reason: &'static str, n: u64) {
        if n > 0 {
            *self.suppressed.lock().unwrap_or_else(|e| e.into_inner()).entry(reason).or_default() += n;
        }
    }

    pub(crate) fn failed(&self, provider: &'static str, status: u16) {
        bump(&self.failed, (provider, status));
    }

    pub(crate) fn invalidated(&self, provider: &'static str) {
        bump(&self.invalidated, provider);
    }

    pub(crate) fn render(&self, out: &mut String) {
        let labelled =
            |out: &mut String, name: &str, help: &str, label: &str, map: &Mutex<BTreeMap<&'static str, u64>>| {
                let _ = writeln!(out, "# HELP parley_{name} {help}\n# TYPE parley_{name} counter");
                for (k, v) in map.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    let _ = writeln!(out, "parley_{name}{{{label}=\"{k}\"}} {v}");
                }
            };
        labelled(out, "push_sent_total", "Pushes a provider accepted, by provider.", "provider", &self.sent);
        labelled(out, "push_suppressed_total", "Pushes not sent, by reason.", "reason", &self.suppressed);
        labelled(
            out,
            "push_invalidated_total",
            "Registrations a provider declared dead.",
            "provider",
            &self.invalidated,
        );
        let _ = writeln!(
            out,
            "# HELP parley_push_failed_total Pushes a provider refused or did not answer (status 0), by provider and status.\n# TYPE parley_push_failed_total counter"
        );
        for ((p, s), v) in self.failed.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "parley_push_failed_total{{provider=\"{p}\",status=\"{s}\"}} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP parley_push_coalesced_total Messages merged into another message's push.\n# TYPE parley_push_coalesced_total counter\nparley_push_coalesced_total {}",
            self.coalesced.load(Relaxed)
        );
    }
}

impl PushMetrics {
    pub(crate) fn render_latency(&self, out: &mut String) {
        crate::metrics::histogram(
            out,
            "push_latency_seconds",
            "From the commit of the earliest message a push covers to the provider's answer.",
            &self.latency,
            1e-6,
        );
    }
}

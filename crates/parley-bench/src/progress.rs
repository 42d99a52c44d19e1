//! The run's progress, for the progress bar the command line draws while a scenario runs.
//!
//! Scenarios name their current phase and count what they finish; a global is enough, since one
//! process runs one scenario, and atomics keep the hot paths (every delivery) cheap.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static DONE: AtomicU64 = AtomicU64::new(0);
static TOTAL: AtomicU64 = AtomicU64::new(0);
static PHASE: Mutex<Option<(&'static str, Instant)>> = Mutex::new(None);

/// Starts a phase of `total` units (0 when unknown); resets the count.
pub fn phase(name: &'static str, total: u64) {
    DONE.store(0, Ordering::Relaxed);
    TOTAL.store(total, Ordering::Relaxed);
    *PHASE.lock().unwrap_or_else(|e| e.into_inner()) = Some((name, Instant::now()));
}

/// Counts `n` more units done in the current phase.
pub fn add(n: u64) {
    DONE.fetch_add(n, Ordering::Relaxed);
}

/// Where the run stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Snapshot {
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
    pub elapsed: Duration,
}

pub fn snapshot() -> Option<Snapshot> {
    let (phase, since) = (*PHASE.lock().unwrap_or_else(|e| e.into_inner()))?;
    Some(Snapshot {
        phase,
        done: DONE.load(Ordering::Relaxed),
        total: TOTAL.load(Ordering::Relaxed),
        elapsed: since.elapsed(),
    })
}

impl Snapshot {
    /// One line: `sending  [#########.........]  45,000/100,000  9,120/s  4.9 s`.
    pub fn render(&self, width: usize) -> String {
        let rate = self.done as f64 / self.elapsed.as_secs_f64().max(1e-3);
        let bar = if self.total > 0 {
            let filled = ((self.done.min(self.total) as f64 / self.total as f64) * width as f64) as usize;
            format!("[{}{}]  {}/{}", "#".repeat(filled), ".".repeat(width - filled), self.done, self.total)
        } else {
            format!("{}", self.done)
        };
        format!("{:<12} {bar}  {rate:.0}/s  {:.1} s", self.phase, self.elapsed.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::Snapshot;
    use std::time::Duration;

    #[test]
    fn renders_a_bar() {
        let s = Snapshot { phase: "sending", done: 50, total: 100, elapsed: Duration::from_secs(2) };
        assert_eq!(s.render(10), "sending      [#####.....]  50/100  25/s  2.0 s");
        let open = Snapshot { phase: "holding", done: 7, total: 0, elapsed: Duration::from_secs(1) };
        assert_eq!(open.render(10), "holding      7  7/s  1.0 s");
        let over = Snapshot { phase: "x", done: 120, total: 100, elapsed: Duration::from_secs(1) };
        assert!(over.render(4).contains("[####]  120/100"));
    }
}

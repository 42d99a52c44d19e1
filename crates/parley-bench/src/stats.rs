//! Latency summaries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Summary {
    /// Percentiles in milliseconds (nearest rank).
    pub fn of(samples: &mut [Duration]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1000.0
        };
        Summary { count: samples.len(), p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999), max: at(1.0) }
    }
}

/// Sub-buckets per power of two: values are kept to within 1/2048 (< 0.05 %, so a 5 s latency is
/// still told apart to 2.5 ms).
const SUB_BITS: u32 = 11;
const SUB: u64 = 1 << SUB_BITS;
/// Largest value kept apart, in microseconds (about 12.7 days); larger ones count as it.
const TOP: u64 = (1 << 40) - 1;

/// A fixed-size, lock-free, log-linear histogram of durations in microseconds, shared by many
/// tasks, for runs with too many samples to keep one by one (about 0.5 MiB, whatever the count).
/// Values below 4,096 µs are exact; above, each is reported as the top of its bucket (within
/// 0.05 %), except the maximum, which is exact.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..=bucket(TOP)).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

/// The bucket of a value: exact below `2·SUB`, then `SUB` buckets per power of two.
fn bucket(us: u64) -> usize {
    let v = us.min(TOP);
    if v < SUB {
        return v as usize;
    }
    let shift = 63 - v.leading_zeros() - SUB_BITS;
    ((u64::from(shift) + 1) * SUB + ((v >> shift) - SUB)) as usize
}

/// The smallest value that falls in bucket `i`.
fn bucket_floor(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let shift = i / SUB - 1;
    (SUB + i % SUB) << shift
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn record_us(&self, us: u64) {
        self.buckets[bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(us, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Percentiles in milliseconds (nearest rank, the top of the bucket it falls in).
    pub fn summary(&self) -> Summary {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Summary::default();
        }
        let max = self.max.load(Ordering::Relaxed);
        let at = |q: f64| {
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for (i, &c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    let top = bucket_floor(i + 1).saturating_sub(1);
                    return top.min(max) as f64 / 1000.0;
                }
            }
            max as f64 / 1000.0
        };
        Summary {
            count: total as usize,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: max as f64 / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut prev = 0;
        for v in (0..5000).chain((5000..10_000_000).step_by(997)).chain([TOP - 1, TOP]) {
            let b = bucket(v);
            assert!(b >= prev, "{v}");
            prev = b;
            let (lo, hi) = (bucket_floor(b), bucket_floor(b + 1));
            assert!(lo <= v && v < hi, "{v}: [{lo}, {hi})");
            assert!((hi - lo) as f64 <= (lo as f64 / SUB as f64).max(1.0), "{v}: [{lo}, {hi})");
        }
        assert_eq!(bucket(u64::MAX), bucket(TOP));
    }

    #[test]
    fn histogram_percentiles() {
        let h = Histogram::default();
        assert_eq!(h.summary().count, 0);
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!((s.count, s.max), (100, 100.0));
        assert!((50.0..50.03).contains(&s.p50), "{s:?}");
        assert!((99.0..99.05).contains(&s.p99), "{s:?}");
        let h = Histogram::default();
        h.record_us(42);
        assert_eq!((h.summary().p50, h.summary().max), (0.042, 0.042));
    }

    #[test]
    fn nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Summary::of(&mut v);
        assert_eq!((s.p50, s.p99, s.max), (50.0, 99.0, 100.0));
    }
}

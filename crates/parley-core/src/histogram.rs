//! A fixed-bucket histogram for metrics: lock-free to record, read as a consistent-enough
//! snapshot for Prometheus (each bucket is exact; the set is not taken atomically).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Microsecond bounds for latencies, 50 µs to 2.5 s.
pub const MICROS: &[u64] =
    &[50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 2_500_000];
/// Bounds for counts (batch sizes, queue depths).
pub const COUNTS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024, 2_048, 4_096];

pub struct Histogram {
    bounds: &'static [u64],
    /// One per bound, plus the overflow bucket (`+Inf`).
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// What a histogram holds at one moment: cumulative counts per upper bound (`None` is `+Inf`).
pub struct Snapshot {
    pub buckets: Vec<(Option<u64>, u64)>,
    pub sum: u64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Self {
        Histogram { bounds, buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum: AtomicU64::new(0) }
    }

    pub fn observe(&self, value: u64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            total += b.load(Relaxed);
            buckets.push((self.bounds.get(i).copied(), total));
        }
        Snapshot { buckets, sum: self.sum.load(Relaxed), count: total }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_with_inclusive_bounds() {
        let h = Histogram::new(&[10, 100]);
        for v in [1, 10, 11, 100, 1000] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(Some(10), 2), (Some(100), 4), (None, 5)]);
        assert_eq!((s.sum, s.count), (1122, 5));
    }
}

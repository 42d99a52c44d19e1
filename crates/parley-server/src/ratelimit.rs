//! Token buckets: per device for sends, shared by REST and the WebSocket so a device cannot
//! multiply its allowance by opening more connections; per user for uploads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_core::ids::DeviceId;

const SHARDS: usize = 16;

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

pub(crate) struct RateLimiter<K = DeviceId> {
    rate: f64,
    burst: f64,
    shards: Box<[Mutex<HashMap<K, Bucket>>]>,
}

impl<K: Copy + Eq + std::hash::Hash + Into<i64>> RateLimiter<K> {
    pub(crate) fn new(rate_per_sec: f64, burst: u32) -> Self {
        RateLimiter {
            rate: rate_per_sec.max(0.001),
            burst: f64::from(burst.max(1)),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Takes one token for `key`; `Err(ms)` says how long until one is available.
    pub(crate) fn check(&self, key: K) -> Result<(), u64> {
        let now = Instant::now();
        let shard = (key.into() as u64 % SHARDS as u64) as usize;
        let mut shard = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
        let b = shard.entry(key).or_insert(Bucket { tokens: self.burst, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - b.tokens) / self.rate) * 1000.0).ceil() as u64)
        }
    }

    /// Forgets buckets that have refilled: a full bucket is the same as none.
    fn forget_full(&self) {
        let now = Instant::now();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate < self.burst);
        }
    }
}

/// Keeps the bucket maps small for the life of the server.
pub(crate) async fn sweep(sends: Arc<RateLimiter>, uploads: Arc<RateLimiter<parley_core::ids::UserId>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        sends.forget_full();
        uploads.forget_full();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuses_with_a_wait() {
        let rl = RateLimiter::new(10.0, 3);
        assert!(rl.check(DeviceId(1)).is_ok() && rl.check(DeviceId(1)).is_ok() && rl.check(DeviceId(1)).is_ok());
        let wait = rl.check(DeviceId(1)).unwrap_err();
        assert!((1..=100).contains(&wait), "{wait}");
        assert!(rl.check(DeviceId(2)).is_ok(), "buckets are per device");
    }
}

//! `idle`: opens N authenticated connections (ramped), holds them, and reports the connect rate,
//! failures, and the server's resident memory before and after (from `/proc/PID/status`), i.e.
//! the bytes each idle connection costs the server.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::group::connect_all;
use crate::setup;
use crate::{BenchError, Result};

#[derive(Clone, Debug)]
pub struct IdleArgs {
    pub server: String,
    pub admin_token: String,
    pub conns: usize,
    /// How long to hold the connections open before measuring and closing.
    pub hold: Duration,
    pub server_pid: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub scenario: &'static str,
    pub conns: usize,
    pub connected: usize,
    pub connect_seconds: f64,
    pub connects_per_sec: f64,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_after_kib: Option<u64>,
    pub server_bytes_per_conn: Option<f64>,
}

/// VmRSS of a process, in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_rss(&status)
}

fn parse_rss(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

pub async fn run(args: IdleArgs) -> Result<IdleReport> {
    let accounts = setup::provision(&args.server, &args.admin_token, 'i', args.conns).await?;
    let tokens: Vec<String> = accounts.into_iter().map(|a| a.token).collect();
    // Settle the allocator after account creation, then take the baseline.
    let before = args.server_pid.and_then(rss_kib);
    let started = Instant::now();
    let conns = connect_all(&args.server, &tokens, true).await?;
    let connect_seconds = started.elapsed().as_secs_f64();
    crate::progress::phase("holding", 0);
    tokio::time::sleep(args.hold).await;
    let after = args.server_pid.and_then(rss_kib);
    let connected = conns.len();
    if connected == 0 {
        return Err(BenchError::Failed("no connection was established".into()));
    }
    drop(conns);
    let per_conn = match (before, after) {
        (Some(b), Some(a)) => Some((a.saturating_sub(b) * 1024) as f64 / connected as f64),
        _ => None,
    };
    Ok(IdleReport {
        scenario: "idle",
        conns: args.conns,
        connected,
        connect_seconds,
        connects_per_sec: connected as f64 / connect_seconds.max(1e-9),
        server_rss_before_kib: before,
        server_rss_after_kib: after,
        server_bytes_per_conn: per_conn,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_vm_rss() {
        let status = "Name:\tparley\nVmPeak:\t  100 kB\nVmRSS:\t   68840 kB\nThreads:\t3\n";
        assert_eq!(super::parse_rss(status), Some(68840));
    }
}

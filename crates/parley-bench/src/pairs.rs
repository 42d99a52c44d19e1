//! `pairs`: open-loop 1:1 traffic. Users are paired into direct conversations and every user
//! sends to its partner on a fixed schedule, whatever the server's answers; latency counts from
//! the scheduled time, so queueing cannot hide (no coordinated omission). Receivers `ack` (the
//! SDK does) and `read` what they get, like real clients. Reports send → `sent` and send →
//! delivery percentiles, delivered, lost, duplicated, throughput, and with `--server-pid` the
//! server's CPU per delivered message.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use parley_client::Event;
use serde::Serialize;

use crate::group::connect_spread;
use crate::presence::server_cpu_seconds;
use crate::setup;
use crate::stats::Summary;
use crate::{BenchError, Result};

#[derive(Clone, Debug)]
pub struct PairsArgs {
    pub server: String,
    pub admin_token: String,
    pub users: usize,
    /// Messages per second, all senders together.
    pub rate: f64,
    pub duration: Duration,
    pub server_pid: Option<u32>,
    /// More nodes of the same cluster: users connect round-robin over `server` and these, so
    /// partners sit on different nodes.
    pub other_servers: Vec<String>,
    /// The other nodes' process ids, to add their CPU time.
    pub other_pids: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct PairsReport {
    pub scenario: &'static str,
    pub users: usize,
    pub rate: f64,
    pub seconds: f64,
    pub scheduled: usize,
    pub sent: usize,
    pub send_errors: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub delivered_per_sec: f64,
    pub send_to_sent_ms: Summary,
    pub send_to_delivery_ms: Summary,
    pub server_cpu_seconds: Option<f64>,
    pub server_cpu_us_per_delivered: Option<f64>,
    /// Nodes the users were spread over.
    pub nodes: usize,
    /// Each node's CPU seconds over the run (`--server-pid` first, then the others').
    pub node_cpu_seconds: Vec<f64>,
}

/// How long receivers keep listening after the last scheduled send.
const DRAIN: Duration = Duration::from_secs(5);

pub async fn run(args: PairsArgs) -> Result<PairsReport> {
    let users = args.users.max(2).next_multiple_of(2);
    let accounts = setup::provision(&args.server, &args.admin_token, 'p', users).await?;
    let convs = setup::pair_up(&args.server, &accounts).await?;
    let tokens: Vec<String> = accounts.iter().map(|a| a.token.clone()).collect();
    let servers: Vec<String> = std::iter::once(args.server.clone()).chain(args.other_servers.clone()).collect();
    let online = connect_spread(&servers, &tokens, true).await?;
    let pids: Vec<u32> = args.server_pid.into_iter().chain(args.other_pids.iter().copied()).collect();
    let cpu_of = |pids: &[u32]| pids.iter().map(|&p| server_cpu_seconds(p)).collect::<Option<Vec<f64>>>();
    let per_user = args.rate / users as f64;
    let count = ((per_user * args.duration.as_secs_f64()).floor() as usize).max(1);
    let interval = Duration::from_secs_f64(1.0 / per_user.max(1e-6));
    let start = Instant::now() + Duration::from_millis(300);
    let end = start + interval.mul_f64(count as f64) + DRAIN;
    let cpu_before = cpu_of(&pids);
    crate::progress::phase("delivering", (count * users) as u64);

    let mut senders = Vec::with_capacity(users);
    let mut receivers = Vec::with_capacity(users);
    for (u, (conn, mut events)) in online.into_iter().enumerate() {
        let conv = convs[u / 2];
        // Stagger users across the interval so the load is smooth, not a wave per tick.
        let offset = interval.mul_f64(u as f64 / users as f64);
        let c = conn.clone();
        senders.push(tokio::spawn(async move {
            let mut inflight = Vec::with_capacity(count);
            for k in 0..count {
                let at = start + offset + interval.mul_f64(k as f64);
                tokio::time::sleep_until(at.into()).await;
                let c = c.clone();
                inflight.push(tokio::spawn(async move {
                    c.send_text(conv, &format!("p{u}:{k}")).await.map(|_| at.elapsed())
                }));
            }
            let mut lat = Vec::with_capacity(count);
            let mut errors = 0;
            for f in inflight {
                match f.await {
                    Ok(Ok(d)) => lat.push(d),
                    Ok(Err(e)) => {
                        if errors == 0 {
                            eprintln!("pairs: a send failed: {e}");
                        }
                        errors += 1
                    }
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
        receivers.push(tokio::spawn(async move {
            let mut got: Vec<(usize, usize, Duration)> = Vec::with_capacity(count);
            while let Ok(Some(e)) = tokio::time::timeout_at(end.into(), events.recv()).await {
                if let Event::Message(m) = e
                    && m.kind == "text"
                {
                    let now = Instant::now();
                    if let Some((s, k)) = tag(m.body.get()) {
                        let at = start + interval.mul_f64(s as f64 / users as f64) + interval.mul_f64(k as f64);
                        got.push((s, k, now.saturating_duration_since(at)));
                        crate::progress::add(1);
                    }
                    let _ = conn.read(m.conversation_id, m.seq).await;
                }
            }
            got
        }));
    }
    let mut send_lat = Vec::new();
    let mut send_errors = 0;
    for r in join_all(senders).await {
        let (lat, errors) = r.map_err(|e| BenchError::Failed(e.to_string()))?;
        send_lat.extend(lat);
        send_errors += errors;
    }
    let cpu_after = cpu_of(&pids);
    let mut delivery_lat = Vec::new();
    let mut seen = HashSet::new();
    let mut duplicated = 0;
    for r in join_all(receivers).await {
        for (s, k, d) in r.map_err(|e| BenchError::Failed(e.to_string()))? {
            if seen.insert((s, k)) {
                delivery_lat.push(d);
            } else {
                duplicated += 1;
            }
        }
    }
    let seconds = args.duration.as_secs_f64();
    let sent = send_lat.len();
    let delivered = delivery_lat.len();
    let node_cpu: Vec<f64> = match (&cpu_before, &cpu_after) {
        (Some(b), Some(a)) if !pids.is_empty() => a.iter().zip(b).map(|(a, b)| a - b).collect(),
        _ => Vec::new(),
    };
    let cpu = (!node_cpu.is_empty()).then(|| node_cpu.iter().sum::<f64>());
    Ok(PairsReport {
        scenario: "pairs",
        users,
        rate: args.rate,
        seconds,
        scheduled: count * users,
        sent,
        send_errors,
        delivered,
        lost: sent.saturating_sub(delivered),
        duplicated,
        delivered_per_sec: delivered as f64 / seconds.max(1e-9),
        send_to_sent_ms: Summary::of(&mut send_lat),
        send_to_delivery_ms: Summary::of(&mut delivery_lat),
        server_cpu_seconds: cpu,
        server_cpu_us_per_delivered: cpu.filter(|_| delivered > 0).map(|c| c * 1e6 / delivered as f64),
        nodes: servers.len(),
        node_cpu_seconds: node_cpu,
    })
}

fn tag(body: &str) -> Option<(usize, usize)> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let (s, k) = v.get("text")?.as_str()?.strip_prefix('p')?.split_once(':')?;
    Some((s.parse().ok()?, k.parse().ok()?))
}

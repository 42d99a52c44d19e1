//! `max`: closed-loop 1:1 traffic that steps up the number of sends in flight per sender and
//! reports, for each step, durable sends per second and send → `sent` latency; the answer is the
//! highest throughput whose p99 stays under the bound (50 ms by default).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;

use crate::group::connect_all;
use crate::setup;
use crate::stats::Summary;
use crate::{BenchError, Result};

#[derive(Clone, Debug)]
pub struct MaxArgs {
    pub server: String,
    pub admin_token: String,
    pub users: usize,
    /// Seconds per step.
    pub step: Duration,
    pub p99_bound_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Step {
    pub window: usize,
    pub sends_per_sec: f64,
    pub errors: usize,
    pub send_to_sent_ms: Summary,
}

#[derive(Debug, Serialize)]
pub struct MaxReport {
    pub scenario: &'static str,
    pub users: usize,
    pub p99_bound_ms: f64,
    pub steps: Vec<Step>,
    /// The best step within the bound, if any.
    pub best_sends_per_sec: Option<f64>,
    pub best_window: Option<usize>,
}

const WINDOWS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

pub async fn run(args: MaxArgs) -> Result<MaxReport> {
    let users = args.users.max(2).next_multiple_of(2);
    let accounts = setup::provision(&args.server, &args.admin_token, 'x', users).await?;
    let convs = setup::pair_up(&args.server, &accounts).await?;
    let tokens: Vec<String> = accounts.iter().map(|a| a.token.clone()).collect();
    let online = connect_all(&args.server, &tokens, true).await?;
    let mut conns = Vec::with_capacity(online.len());
    for (conn, mut events) in online {
        // Receivers drain their events (the SDK acks what it hands over).
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        conns.push(conn);
    }
    let mut steps = Vec::new();
    for window in WINDOWS {
        crate::progress::phase("stepping", 0);
        let deadline = Instant::now() + args.step;
        let tasks = conns.iter().enumerate().map(|(u, conn)| {
            let (conn, conv) = (conn.clone(), convs[u / 2]);
            async move {
                let mut inflight = FuturesUnordered::new();
                let (mut lat, mut errors, mut n) = (Vec::new(), 0usize, 0u64);
                loop {
                    while inflight.len() < window && Instant::now() < deadline {
                        n += 1;
                        let (c, text) = (conn.clone(), format!("max {u}:{n}"));
                        inflight.push(async move {
                            let t = Instant::now();
                            c.send_text(conv, &text).await.map(|_| t.elapsed())
                        });
                    }
                    match inflight.next().await {
                        Some(Ok(d)) => {
                            lat.push(d);
                            crate::progress::add(1);
                        }
                        Some(Err(_)) => errors += 1,
                        None => break,
                    }
                }
                (lat, errors)
            }
        });
        let started = Instant::now();
        let (mut lat, mut errors) = (Vec::new(), 0);
        for (l, e) in join_all(tasks).await {
            lat.extend(l);
            errors += e;
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let step =
            Step { window, sends_per_sec: lat.len() as f64 / secs, errors, send_to_sent_ms: Summary::of(&mut lat) };
        let over = step.send_to_sent_ms.p99 > args.p99_bound_ms;
        steps.push(step);
        if over {
            break;
        }
    }
    if steps.is_empty() {
        return Err(BenchError::Failed("no step ran".into()));
    }
    let best = steps
        .iter()
        .filter(|s| s.send_to_sent_ms.p99 <= args.p99_bound_ms && s.errors == 0)
        .max_by(|a, b| a.sends_per_sec.total_cmp(&b.sends_per_sec));
    Ok(MaxReport {
        scenario: "max",
        users,
        p99_bound_ms: args.p99_bound_ms,
        best_sends_per_sec: best.map(|s| s.sends_per_sec),
        best_window: best.map(|s| s.window),
        steps,
    })
}

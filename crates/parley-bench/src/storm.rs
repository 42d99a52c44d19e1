//! `storm`: N devices connected, then all dropped at once and reconnected at once (as after a
//! node restart or a network blip): the time until every device is synced again, and errors.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use parley_client::{ConnectOptions, Connection, Event};
use serde::Serialize;

use crate::group::connect_all;
use crate::setup;
use crate::stats::Summary;
use crate::{BenchError, Result};

#[derive(Clone, Debug)]
pub struct StormArgs {
    pub server: String,
    pub admin_token: String,
    pub conns: usize,
}

#[derive(Debug, Serialize)]
pub struct StormReport {
    pub scenario: &'static str,
    pub conns: usize,
    pub resynced: usize,
    pub errors: usize,
    /// From the moment every device starts reconnecting to the last one's `synced`.
    pub seconds_to_all_synced: f64,
    /// Per device: reconnect start → `synced`.
    pub reconnect_to_synced_ms: Summary,
}

/// Most time a device may take to get back before it counts as an error.
const DEADLINE: Duration = Duration::from_secs(60);

pub async fn run(args: StormArgs) -> Result<StormReport> {
    let accounts = setup::provision(&args.server, &args.admin_token, 's', args.conns).await?;
    let tokens: Vec<String> = accounts.into_iter().map(|a| a.token).collect();
    // Connect everyone (ramped), then drop everyone at once.
    let first = connect_all(&args.server, &tokens, true).await?;
    join_all(first.iter().map(|(c, _)| c.close())).await;
    drop(first);
    let sources = setup::source_addrs(&args.server, tokens.len());
    crate::progress::phase("reconnecting", tokens.len() as u64);
    let started = Instant::now();
    let attempts = tokens.iter().enumerate().map(|(i, t)| {
        let server = args.server.clone();
        let local_addr = sources.get(i % sources.len().max(1)).copied();
        async move {
            let t0 = Instant::now();
            let opts = ConnectOptions { local_addr, ..ConnectOptions::default() };
            let (conn, mut events) = Connection::connect(&server, t, opts).await.ok()?;
            let synced = tokio::time::timeout(DEADLINE, async {
                while let Some(e) = events.recv().await {
                    if matches!(e, Event::Synced) {
                        return true;
                    }
                }
                false
            })
            .await
            .unwrap_or(false);
            let took = t0.elapsed();
            crate::progress::add(1);
            Some((synced.then_some(took), conn))
        }
    });
    let results = join_all(attempts).await;
    let all = started.elapsed();
    let mut lat = Vec::with_capacity(results.len());
    let mut errors = 0;
    let mut conns = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Some((Some(d), c)) => {
                lat.push(d);
                conns.push(c);
            }
            _ => errors += 1,
        }
    }
    join_all(conns.iter().map(Connection::close)).await;
    if lat.is_empty() {
        return Err(BenchError::Failed("no device got back".into()));
    }
    Ok(StormReport {
        scenario: "storm",
        conns: args.conns,
        resynced: lat.len(),
        errors,
        seconds_to_all_synced: all.as_secs_f64(),
        reconnect_to_synced_ms: Summary::of(&mut lat),
    })
}

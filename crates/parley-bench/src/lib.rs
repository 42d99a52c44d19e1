//! `parley bench`: drives a running server with real WebSocket clients (the SDK) and reports
//! what it measured, as a human summary and one JSON object. Every run is bounded in time and
//! count and stops by itself.

pub mod group;
pub mod idle;
pub mod max;
pub mod media;
pub mod pairs;
pub mod presence;
pub mod progress;
pub mod push;
pub mod server_metrics;
pub mod setup;
pub mod stats;
pub mod storm;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use parley_client::{ClientError, ConnectOptions, Connection, Event};
use serde::Serialize;

pub use stats::Summary;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("client: {0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Failed(String),
}

pub type Result<T> = std::result::Result<T, BenchError>;

/// `sends`: N connections, each keeping `window` sends in flight into a direct conversation,
/// for `duration`. Every `sent` is a durably stored message.
#[derive(Clone, Debug)]
pub struct SendsArgs {
    pub server: String,
    pub conns: usize,
    pub window: usize,
    pub duration: Duration,
}

#[derive(Debug, Serialize)]
pub struct SendsReport {
    pub scenario: &'static str,
    pub conns: usize,
    pub window: usize,
    pub seconds: f64,
    pub sent: u64,
    pub errors: u64,
    pub sends_per_sec: f64,
    pub send_to_sent_ms: Summary,
}

pub async fn sends(args: SendsArgs) -> Result<SendsReport> {
    let users = setup::users(&args.server, args.conns.max(2).next_multiple_of(2)).await?;
    // Pair users up: each pair shares a direct conversation and both send into it.
    let mut tasks = Vec::new();
    let start_at = Instant::now() + Duration::from_millis(200);
    for pair in users.chunks(2) {
        let conv = pair[0].client.create_direct(pair[1].user_id).await?.conversation_id;
        for u in pair.iter().take(args.conns.saturating_sub(tasks.len())) {
            let (conn, events) = Connection::connect(&args.server, &u.token, ConnectOptions::default()).await?;
            tokio::spawn(drain(events));
            let (window, duration) = (args.window.max(1), args.duration);
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(start_at.into()).await;
                let deadline = Instant::now() + duration;
                let mut inflight = FuturesUnordered::new();
                let (mut lat, mut errors) = (Vec::new(), 0u64);
                let mut n = 0u64;
                loop {
                    while inflight.len() < window && Instant::now() < deadline {
                        let c = conn.clone();
                        n += 1;
                        let text = format!("bench {n}");
                        inflight.push(async move {
                            let t = Instant::now();
                            c.send_text(conv, &text).await.map(|_| t.elapsed())
                        });
                    }
                    match inflight.next().await {
                        Some(Ok(d)) => {
                            lat.push(d);
                            progress::add(1);
                        }
                        Some(Err(_)) => errors += 1,
                        None => break,
                    }
                }
                let _ = conn.close().await;
                (lat, errors)
            }));
        }
    }
    progress::phase("sending", 0);
    let started = Instant::now();
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.map_err(|e| BenchError::Failed(e.to_string()))?;
        lat.extend(l);
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64() - 0.2;
    let sent = lat.len() as u64;
    Ok(SendsReport {
        scenario: "sends",
        conns: args.conns,
        window: args.window,
        seconds,
        sent,
        errors,
        sends_per_sec: sent as f64 / seconds,
        send_to_sent_ms: Summary::of(&mut lat),
    })
}

/// Reads and drops events so the SDK's channel never fills.
async fn drain(mut events: tokio::sync::mpsc::Receiver<Event>) {
    while events.recv().await.is_some() {}
}

/// `backlog`: a device is offline while `messages` arrive, then connects: time to `synced`.
#[derive(Clone, Debug)]
pub struct BacklogArgs {
    pub server: String,
    pub messages: usize,
}

#[derive(Debug, Serialize)]
pub struct BacklogReport {
    pub scenario: &'static str,
    pub messages: usize,
    pub replayed: usize,
    pub seconds_to_synced: f64,
    pub messages_per_sec: f64,
}

pub async fn backlog(args: BacklogArgs) -> Result<BacklogReport> {
    let users = setup::users(&args.server, 2).await?;
    let conv = users[0].client.create_direct(users[1].user_id).await?.conversation_id;
    let (sender, events) = Connection::connect(&args.server, &users[0].token, ConnectOptions::default()).await?;
    tokio::spawn(drain(events));
    let mut inflight = FuturesUnordered::new();
    let mut queued = 0;
    progress::phase("sending", args.messages as u64);
    while queued < args.messages || !inflight.is_empty() {
        while inflight.len() < 256 && queued < args.messages {
            let c = sender.clone();
            queued += 1;
            let text = format!("backlog {queued}");
            inflight.push(async move { c.send_text(conv, &text).await });
        }
        if let Some(r) = inflight.next().await {
            r?;
            progress::add(1);
        }
    }
    let _ = sender.close().await;
    let opts = ConnectOptions { auto_ack: true, ..Default::default() };
    progress::phase("replaying", args.messages as u64);
    let started = Instant::now();
    let (conn, mut events) = Connection::connect(&args.server, &users[1].token, opts).await?;
    let mut replayed = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Message(m))) if m.kind == "text" => {
                replayed += 1;
                progress::add(1);
            }
            Ok(Some(Event::Synced)) => break,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return Err(BenchError::Failed("no synced within 300 s".into())),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = conn.close().await;
    Ok(BacklogReport {
        scenario: "backlog",
        messages: args.messages,
        replayed,
        seconds_to_synced: seconds,
        messages_per_sec: replayed as f64 / seconds,
    })
}

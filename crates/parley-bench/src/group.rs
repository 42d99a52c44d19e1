//! `group`: fanout to an all-online group. Senders send on a fixed schedule (open loop: latency
//! counts from the scheduled time, so queueing cannot hide); every member records when each
//! message arrives. Reports the time from send to the LAST member's receipt per message, the
//! per-recipient latency distribution, and checks that every member saw every message once, in
//! seq order.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use parley_client::{Client, ConnectOptions, Connection, Event};
use parley_proto::Id;
use serde::Serialize;

use crate::stats::Summary;
use crate::{BenchError, Result};

#[derive(Clone, Debug)]
pub struct GroupArgs {
    pub server: String,
    pub admin_token: String,
    pub members: usize,
    /// Messages per second, per sender.
    pub rate: f64,
    pub senders: usize,
    pub duration: Duration,
    /// Whether members acknowledge what they receive, as real clients do (the default).
    pub ack: bool,
}

#[derive(Debug, Serialize)]
pub struct GroupReport {
    pub scenario: &'static str,
    pub members: usize,
    pub senders: usize,
    pub rate_per_sender: f64,
    pub messages: usize,
    pub deliveries: usize,
    pub deliveries_per_sec: f64,
    /// Send (scheduled) → the last member's receipt, one sample per message.
    pub send_to_last_member_ms: Summary,
    /// Send (scheduled) → each member's receipt.
    pub per_recipient_ms: Summary,
    pub missing: usize,
    pub duplicates: usize,
    pub out_of_order: usize,
}

pub async fn run(args: GroupArgs) -> Result<GroupReport> {
    let admin = Client::new(&args.server).with_token(&args.admin_token);
    let prefix = format!("g{:08x}_", rand::random::<u32>());
    let accounts = admin.bulk_accounts(&prefix, args.members as u32, "bench-password").await?;
    let owner = Client::new(&args.server).with_token(&accounts[0].token);
    let others: Vec<Id> = accounts[1..].iter().map(|a| a.user_id).collect();
    let conv = owner.create_group("bench", &others).await?.conversation_id;

    // Everyone online; each receiver records (sender, message number, seq, arrival).
    let tokens: Vec<String> = accounts.iter().map(|a| a.token.clone()).collect();
    let online = connect_all(&args.server, &tokens, args.ack).await?;
    let senders = args.senders.clamp(1, args.members);
    let total_per_sender = (args.rate * args.duration.as_secs_f64()).ceil().max(1.0) as usize;
    let expected_total = senders * total_per_sender;
    let start = Instant::now() + Duration::from_millis(500);
    crate::progress::phase("delivering", (expected_total * online.len()).saturating_sub(expected_total) as u64);
    let mut conns = Vec::with_capacity(online.len());
    let mut receivers = Vec::with_capacity(online.len());
    for (i, (conn, mut events)) in online.into_iter().enumerate() {
        conns.push(conn);
        let expect = expected_total - if i < senders { total_per_sender } else { 0 };
        receivers.push(tokio::spawn(async move {
            let mut got: Vec<(usize, usize, i64, Instant)> = Vec::with_capacity(expect);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while got.len() < expect {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Ok(Some(Event::Message(m))) if m.kind == "text" && m.conversation_id == conv => {
                        let at = Instant::now();
                        if let Some((s, k)) = parse_tag(m.body.get()) {
                            got.push((s, k, m.seq, at));
                            crate::progress::add(1);
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            got
        }));
    }
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let sender_tasks: Vec<_> = conns[..senders]
        .iter()
        .cloned()
        .enumerate()
        .map(|(s, conn)| async move {
            let mut inflight = Vec::with_capacity(total_per_sender);
            for k in 0..total_per_sender {
                tokio::time::sleep_until((start + interval.mul_f64(k as f64)).into()).await;
                let c = conn.clone();
                inflight.push(tokio::spawn(async move { c.send_text(conv, &format!("g{s}:{k}")).await }));
            }
            for f in inflight {
                f.await.map_err(|e| BenchError::Failed(e.to_string()))??;
            }
            Ok::<_, BenchError>(())
        })
        .collect();
    for r in join_all(sender_tasks).await {
        r?;
    }
    let mut per_recipient = Vec::new();
    let mut last: HashMap<(usize, usize), Duration> = HashMap::new();
    let (mut deliveries, mut missing, mut duplicates, mut out_of_order) = (0, 0, 0, 0);
    for (i, r) in receivers.into_iter().enumerate() {
        let got = r.await.map_err(|e| BenchError::Failed(e.to_string()))?;
        let own = if i < senders { total_per_sender } else { 0 };
        let mut seen = std::collections::HashSet::new();
        let mut prev_seq = 0;
        for &(s, k, seq, at) in &got {
            if !seen.insert((s, k)) {
                duplicates += 1;
                continue;
            }
            if seq <= prev_seq {
                out_of_order += 1;
            }
            prev_seq = seq;
            let sent_at = start + interval.mul_f64(k as f64);
            let lat = at.saturating_duration_since(sent_at);
            per_recipient.push(lat);
            let e = last.entry((s, k)).or_default();
            *e = (*e).max(lat);
            deliveries += 1;
        }
        missing += (expected_total - own).saturating_sub(seen.len());
    }
    let elapsed = args.duration.as_secs_f64().max(0.001);
    let mut lasts: Vec<Duration> = last.into_values().collect();
    Ok(GroupReport {
        scenario: "group",
        members: args.members,
        senders,
        rate_per_sender: args.rate,
        messages: expected_total,
        deliveries,
        deliveries_per_sec: deliveries as f64 / elapsed,
        send_to_last_member_ms: Summary::of(&mut lasts),
        per_recipient_ms: Summary::of(&mut per_recipient),
        missing,
        duplicates,
        out_of_order,
    })
}

/// Connects every token, 64 at a time, so the server sees a ramp rather than a wall.
pub(crate) async fn connect_all(
    server: &str,
    tokens: &[String],
    ack: bool,
) -> Result<Vec<(Connection, tokio::sync::mpsc::Receiver<Event>)>> {
    connect_spread(&[server.to_string()], tokens, ack).await
}

/// Like [`connect_all`], token `k` to `servers[k % servers.len()]` (the nodes of a cluster).
pub(crate) async fn connect_spread(
    servers: &[String],
    tokens: &[String],
    ack: bool,
) -> Result<Vec<(Connection, tokio::sync::mpsc::Receiver<Event>)>> {
    let mut out = Vec::with_capacity(tokens.len());
    crate::progress::phase("connecting", tokens.len() as u64);
    let sources = crate::setup::source_addrs(&servers[0], tokens.len());
    for (c, chunk) in tokens.chunks(64).enumerate() {
        let batch = chunk.iter().enumerate().map(|(i, t)| {
            let k = c * 64 + i;
            let local_addr = sources.get(k % sources.len().max(1)).copied();
            let opts = ConnectOptions { auto_ack: ack, local_addr, ..ConnectOptions::default() };
            Connection::connect(&servers[k % servers.len()], t, opts)
        });
        for r in join_all(batch).await {
            out.push(r?);
            crate::progress::add(1);
        }
    }
    Ok(out)
}

fn parse_tag(body: &str) -> Option<(usize, usize)> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let (s, k) = v.get("text")?.as_str()?.strip_prefix('g')?.split_once(':')?;
    Some((s.parse().ok()?, k.parse().ok()?))
}

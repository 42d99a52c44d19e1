//! `push`: N devices that are offline, all members of one group, registered for Web Push to a
//! push service this bench runs on loopback; one sender sends at a fixed rate, so every message
//! is a push to each of the N devices. Reports pushes per second that reached the fake, the
//! server's CPU per push, and the time from each message's `sent` to its pushes' arrival (every
//! device decrypts nothing: the fake decrypts the pushes of one device in ten, RFC 8291, to learn
//! which message each carries).
//!
//! The server must accept a loopback endpoint and push every message:
//! `parley serve --push-allow-private-endpoints --push-coalesce-ms 0 --push-device-per-minute 1000000`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use parley_client::{Client, ConnectOptions, Connection};
use parley_proto::rest::{PushKeys, PutPush};
use serde::Serialize;

use crate::presence::server_cpu_seconds;
use crate::stats::Summary;
use crate::{BenchError, Result};

/// RFC 8291 Appendix A's user agent key pair and secret: every device subscribes with them (the
/// fake decrypts with them), which changes nothing of what the server does per push.
const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
const UA_PUBLIC: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const UA_AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
/// One device in this many has its pushes decrypted for the latency figures.
const SAMPLE_EVERY: usize = 10;

#[derive(Clone, Debug)]
pub struct PushArgs {
    pub server: String,
    pub admin_token: String,
    /// Offline devices (one per account), at most 1,023.
    pub devices: usize,
    /// Messages per second.
    pub rate: f64,
    pub duration: Duration,
    pub server_pid: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct PushReport {
    pub scenario: &'static str,
    pub devices: usize,
    pub messages: usize,
    pub pushes_expected: usize,
    pub pushes_received: usize,
    /// Pushes received per second, from the first message's `sent` to the last push.
    pub pushes_per_sec: f64,
    /// `sent` → the push's arrival at the push service, for the sampled devices.
    pub sent_to_push_ms: Summary,
    pub server_cpu_seconds: Option<f64>,
    pub server_cpu_us_per_push: Option<f64>,
    /// Pushes that did not decrypt or named no message of this run.
    pub undecodable: usize,
}

/// What the fake push service records.
#[derive(Default)]
struct Received {
    count: usize,
    last: Option<Instant>,
    /// (seq, arrival) of the sampled devices' pushes.
    samples: Vec<(i64, Instant)>,
    undecodable: usize,
}

struct Fake {
    received: Mutex<Received>,
    /// Woken on every push.
    arrived: tokio::sync::Notify,
    ua: p256::SecretKey,
    auth: Vec<u8>,
}

async fn receive(State(fake): State<Arc<Fake>>, Path(device): Path<usize>, body: axum::body::Bytes) -> StatusCode {
    let at = Instant::now();
    let seq = if device.is_multiple_of(SAMPLE_EVERY) {
        match parley_push::webpush::decrypt(&body, &fake.ua, &fake.auth)
            .ok()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
            .and_then(|v| v["seq"].as_i64())
        {
            Some(seq) => Some(Some(seq)),
            None => Some(None),
        }
    } else {
        None
    };
    let mut r = fake.received.lock().unwrap_or_else(|e| e.into_inner());
    r.count += 1;
    r.last = Some(at);
    match seq {
        Some(Some(seq)) => r.samples.push((seq, at)),
        Some(None) => r.undecodable += 1,
        None => {}
    }
    drop(r);
    fake.arrived.notify_waiters();
    StatusCode::CREATED
}

pub async fn run(args: PushArgs) -> Result<PushReport> {
    let n = args.devices.clamp(1, 1023);
    let fake = Arc::new(Fake {
        received: Mutex::default(),
        arrived: tokio::sync::Notify::new(),
        ua: p256::SecretKey::from_slice(&b64(UA_PRIVATE)?).map_err(|_| BenchError::Failed("the RFC key".into()))?,
        auth: b64(UA_AUTH)?,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| BenchError::Failed(e.to_string()))?;
    let port = listener.local_addr().map_err(|e| BenchError::Failed(e.to_string()))?.port();
    let app = axum::Router::new().route("/push/{device}", axum::routing::post(receive)).with_state(fake.clone());
    let served = tokio::spawn(async move { axum::serve(listener, app).await });

    // Accounts: a sender and n members, each member's one device registered and never connected.
    let admin = Client::new(&args.server).with_token(&args.admin_token);
    let prefix = format!("p{:08x}_", rand::random::<u32>());
    let accounts = admin.bulk_accounts(&prefix, n as u32 + 1, "bench-password").await?;
    let sender = Client::new(&args.server).with_token(&accounts[0].token);
    let members: Vec<_> = accounts[1..].iter().map(|a| a.user_id).collect();
    let conv = sender.create_group("push bench", &members).await?.conversation_id;
    crate::progress::phase("registering", n as u64);
    for (c, accounts) in accounts[1..].chunks(64).enumerate() {
        let regs = accounts.iter().enumerate().map(|(i, a)| {
            let client = Client::new(&args.server).with_token(&a.token);
            let body = PutPush {
                kind: "webpush".into(),
                endpoint: Some(format!("http://127.0.0.1:{port}/push/{}", c * 64 + i)),
                keys: Some(PushKeys { p256dh: UA_PUBLIC.into(), auth: UA_AUTH.into() }),
                ..PutPush::default()
            };
            async move { client.register_push(&body).await }
        });
        for r in futures_util::future::join_all(regs).await {
            r?;
            crate::progress::add(1);
        }
    }

    // Send on a fixed schedule; each `sent` time is where that message's pushes count from.
    let (conn, _events) = Connection::connect(&args.server, &accounts[0].token, ConnectOptions::default()).await?;
    let total = (args.rate * args.duration.as_secs_f64()).ceil().max(1.0) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let cpu_before = args.server_pid.and_then(server_cpu_seconds);
    let start = Instant::now() + Duration::from_millis(200);
    crate::progress::phase("pushing", (total * n) as u64);
    let mut tasks = Vec::with_capacity(total);
    for k in 0..total {
        tokio::time::sleep_until((start + interval.mul_f64(k as f64)).into()).await;
        let c = conn.clone();
        tasks.push(tokio::spawn(async move {
            let sent = c.send_text(conv, &format!("push bench {k}")).await?;
            Ok::<_, BenchError>((sent.seq, Instant::now()))
        }));
    }
    let mut sent_at: HashMap<i64, Instant> = HashMap::with_capacity(total);
    for t in tasks {
        let (seq, at) = t.await.map_err(|e| BenchError::Failed(e.to_string()))??;
        sent_at.insert(seq, at);
    }
    // Wait for every push, or until none has come for five seconds.
    let expected = total * n;
    let mut seen = 0;
    loop {
        let arrived = fake.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let got = fake.received.lock().unwrap_or_else(|e| e.into_inner()).count;
        crate::progress::add((got - seen) as u64);
        seen = got;
        if got >= expected || tokio::time::timeout(Duration::from_secs(5), arrived).await.is_err() {
            break;
        }
    }
    let cpu_after = args.server_pid.and_then(server_cpu_seconds);
    served.abort();
    let r = std::mem::take(&mut *fake.received.lock().unwrap_or_else(|e| e.into_inner()));
    let first_sent = sent_at.values().min().copied().unwrap_or(start);
    let span = r.last.map_or(0.0, |l| l.saturating_duration_since(first_sent).as_secs_f64());
    let mut latencies = Vec::with_capacity(r.samples.len());
    let mut undecodable = r.undecodable;
    for (seq, at) in r.samples {
        match sent_at.get(&seq) {
            Some(s) => latencies.push(at.saturating_duration_since(*s)),
            None => undecodable += 1,
        }
    }
    let cpu = cpu_before.zip(cpu_after).map(|(a, b)| b - a);
    Ok(PushReport {
        scenario: "push",
        devices: n,
        messages: total,
        pushes_expected: expected,
        pushes_received: r.count,
        pushes_per_sec: if span > 0.0 { r.count as f64 / span } else { 0.0 },
        sent_to_push_ms: Summary::of(&mut latencies),
        server_cpu_seconds: cpu,
        server_cpu_us_per_push: cpu.filter(|_| r.count > 0).map(|c| c * 1e6 / r.count as f64),
        undecodable,
    })
}

fn b64(s: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).map_err(|e| BenchError::Failed(e.to_string()))
}

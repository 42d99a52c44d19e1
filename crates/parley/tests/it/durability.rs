//! Durable before acknowledged: `kill -9` in the middle of concurrent pipelined sends loses no
//! acknowledged message, leaves every log gap-free, and repeats still find the originals. A
//! graceful stop (SIGTERM) closes clients with 1001, exits 0 in time, and keeps what it
//! acknowledged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

fn is_answer(f: &Value) -> bool {
    f["type"] == "sent" || (f["type"] == "error" && f.get("ref").is_some())
}

/// Sends up to `n` text messages into `conv`, with at most `window` unanswered, until done or
/// the connection fails. Returns the `send` frames written (client ids `{tag}-{k}`).
async fn keep_sending(ws: Arc<Ws>, conv: String, tag: String, n: usize, window: usize) -> Vec<Value> {
    let mut written = Vec::new();
    for k in 0..n {
        if k >= window && ws.try_wait_count(is_answer, k + 1 - window, LONG).await.is_err() {
            break;
        }
        let frame = Ws::text_frame(&conv, &format!("{tag}-{k}"), &format!("{tag} message {k}"));
        if ws.try_send_json(&frame).await.is_err() {
            break;
        }
        written.push(frame);
    }
    written
}

/// The `sent` answers a connection got, by client id; fails on any error answer.
fn acknowledged(ws: &Ws) -> HashMap<String, Value> {
    let frames = ws.frames();
    let errors: Vec<&Value> = frames.iter().filter(|f| f["type"] == "error").collect();
    assert!(errors.is_empty(), "sends were refused: {errors:?}");
    frames.into_iter().filter(|f| f["type"] == "sent").map(|f| (s(&f, "client_id"), f)).collect()
}

/// Checks a conversation's whole log: seqs 1..=last_seq without gaps, each client id at most
/// once, and each acknowledged message there with its acknowledged seq and id. Returns the
/// client ids in the log.
async fn check_log(member: &Device, conv: &str, acked: &HashMap<String, Value>) -> HashMap<String, Value> {
    let history = member.history(conv).await;
    let last = i(&member.conversation(conv).await, "last_seq");
    let seqs: Vec<i64> = history.iter().map(|m| i(m, "seq")).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "the log of {conv} has gaps");
    let mut by_cid: HashMap<String, Value> = HashMap::new();
    for m in history.into_iter().filter(|m| m["kind"] == "text") {
        let cid = s(&m, "client_id");
        if let Some(prev) = by_cid.insert(cid.clone(), m.clone()) {
            panic!("client id {cid} is in the log twice: {prev} and {m}");
        }
    }
    for (cid, sent) in acked.iter().filter(|(_, a)| a["conversation_id"] == conv) {
        let m = by_cid.get(cid).unwrap_or_else(|| panic!("acknowledged message {cid} ({sent}) is lost"));
        assert_eq!(m["seq"], sent["seq"], "{cid}");
        assert_eq!(m["message_id"], sent["message_id"], "{cid}");
    }
    by_cid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_stream_loses_no_acknowledged_message() {
    const USERS: usize = 8;
    const PER_CONN: usize = 600;
    const WINDOW: usize = 32;
    let mut srv = TestServer::start().await;
    let devices = srv.logins(USERS).await;
    // Four direct conversations, both members sending into each at once.
    let mut convs = Vec::new();
    for pair in devices.chunks(2) {
        convs.push(pair[0].direct(pair[1].user_id()).await);
    }
    let mut conns = Vec::new();
    for d in &devices {
        conns.push(Arc::new(d.connect_synced().await));
    }
    let tag = unique("k");
    let senders: Vec<_> = conns
        .iter()
        .enumerate()
        .map(|(j, ws)| {
            tokio::spawn(keep_sending(ws.clone(), convs[j / 2].clone(), format!("{tag}-{j}"), PER_CONN, WINDOW))
        })
        .collect();
    // Mid-stream: every sender has some acknowledged, none is near done.
    for ws in &conns {
        ws.wait_count(|f| f["type"] == "sent", 60, LONG).await;
    }
    srv.kill9().await;
    let mut written = Vec::new();
    for task in senders {
        written.push(task.await.expect("sender task"));
    }
    for ws in &conns {
        ws.wait_closed(T).await.expect("the kill closed the socket");
    }
    let mut acked: HashMap<String, Value> = HashMap::new();
    for ws in &conns {
        acked.extend(acknowledged(ws));
    }
    let total_written: usize = written.iter().map(Vec::len).sum();
    assert!(acked.len() < USERS * PER_CONN, "the kill came after every send was answered: not mid-stream");
    eprintln!("{} sends written, {} acknowledged before the kill", total_written, acked.len());
    drop(conns);

    srv.restart().await;
    for (k, conv) in convs.iter().enumerate() {
        check_log(&devices[2 * k], conv, &acked).await;
    }

    // Every send repeated (acknowledged or not): the acknowledged ones get their originals.
    for (j, d) in devices.iter().enumerate() {
        let ws = d.connect_synced().await;
        let answers = ws.pipeline(written[j].clone()).await;
        for (frame, answer) in written[j].iter().zip(&answers) {
            assert_eq!(answer["type"], "sent", "repeat refused: {answer}");
            if let Some(orig) = acked.get(&s(frame, "client_id")) {
                for f in ["conversation_id", "message_id", "seq"] {
                    assert_eq!(answer[f], orig[f], "repeat of {orig} answered {answer}");
                }
            }
        }
    }
    // Now every written send is in its log exactly once, and the logs are still gap-free.
    for (k, conv) in convs.iter().enumerate() {
        let in_log = check_log(&devices[2 * k], conv, &acked).await;
        let want = written[2 * k].len() + written[2 * k + 1].len();
        assert_eq!(in_log.len(), want, "{conv}: one message per client id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_1001_exits_0_and_keeps_acknowledged() {
    let mut srv = TestServer::start().await;
    let v = srv.logins(2).await;
    let (a, b) = (&v[0], &v[1]);
    let ab = a.direct(b.user_id()).await;
    let wa = Arc::new(a.connect_synced().await);
    let wb = b.connect_synced().await;
    let idle = b.user.login().await.connect_synced().await;
    let sender = tokio::spawn(keep_sending(wa.clone(), ab.clone(), unique("g"), 1500, 32));
    wa.wait_count(|f| f["type"] == "sent", 100, LONG).await;
    wb.wait_count(|f| f["type"] == "message" && f["kind"] == "text", 50, T).await;

    let t0 = Instant::now();
    let status = srv.stop().await;
    let took = t0.elapsed();
    assert!(status.success(), "SIGTERM exit status {status}");
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    for ws in [&*wa, &wb, &idle] {
        assert_eq!(ws.closed_with().await, Some(1001), "{:?}", ws.closed());
    }
    let written = sender.await.expect("sender task");
    let acked = acknowledged(&wa);
    assert!(!acked.is_empty());
    eprintln!("{} sends written, {} acknowledged", written.len(), acked.len());

    srv.restart().await;
    check_log(a, &ab, &acked).await;
    // Sessions survive the restart too.
    let wb = b.connect_synced().await;
    wb.barrier().await;
}

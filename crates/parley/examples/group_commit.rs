//! A rough look at group commit: sends from many concurrent clients against one backend, then
//! sends/s and the writer's batch sizes. Not a benchmark of record (those are `parley bench` against a real
//! server); a quick check that concurrent sends share commits.
//!
//! ```sh
//! cargo run --release -p parley --example group_commit -- postgres 10000 100
//! cargo run --release -p parley --example group_commit -- sqlite 10000 100 500
//! ```
//! Arguments: backend (`postgres` or `sqlite`), sends, conversations, clients (each sends its
//! share one after another; by default every send is its own client, all at once). PostgreSQL uses a fresh
//! database on `PARLEY_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/postgres`),
//! dropped afterwards.

use std::sync::Arc;
use std::time::Instant;

use parley_core::MessageKind;
use parley_store::{NewMessage, Store};
use parley_store_postgres::PgStore;
use parley_store_sqlite::SqliteStore;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = args.get(1).map_or("postgres", String::as_str).to_owned();
    let sends: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let convs: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(100);
    let clients: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(sends).clamp(1, sends);

    let admin =
        std::env::var("PARLEY_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let dbname = format!("parley_example_{}", std::process::id());
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, mut events) = tokio::sync::mpsc::channel(1024);
    // Fanout stands in: the writer waits for room in the event queue.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let store: Arc<dyn Store> = if backend == "sqlite" {
        Arc::new(SqliteStore::open(dir.path(), 1, tx).expect("open"))
    } else {
        admin_sql(&admin, &format!("CREATE DATABASE {dbname}")).await;
        let url = format!("{}/{dbname}", admin.rsplit_once('/').expect("a URL with a database").0);
        Arc::new(PgStore::connect(&url, 1, true, tx).await.expect("connect"))
    };

    let mut pairs = Vec::new();
    for i in 0..convs {
        let a = store.create_user(&format!("a{i}"), "a", "h").await.expect("user").id;
        let b = store.create_user(&format!("b{i}"), "b", "h").await.expect("user").id;
        pairs.push((store.create_direct(a, b, false).await.expect("direct").0, a));
    }
    let before = store.writer_stats().batch_size.snapshot();
    let micros_before = store.writer_stats().commit_micros.snapshot();

    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let store = store.clone();
        let (conv, sender) = pairs[c % pairs.len()];
        let mine: Vec<usize> = (c..sends).step_by(clients).collect();
        tasks.push(tokio::spawn(async move {
            for i in mine {
                let msg = NewMessage {
                    conversation_id: conv,
                    sender_id: sender,
                    sender_device_id: None,
                    client_id: Some(format!("c{i}")),
                    kind: MessageKind::Text,
                    body: r#"{"text":"hello, group commit"}"#.into(),
                    target_seq: None,
                    media: Vec::new(),
                    device_epoch: None,
                };
                store.send(msg).await.expect("send");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let elapsed = started.elapsed();

    let after = store.writer_stats().batch_size.snapshot();
    let micros = store.writer_stats().commit_micros.snapshot();
    let batches = after.count - before.count;
    let jobs = after.sum - before.sum;
    let mut report = format!(
        "{backend}: {sends} sends by {clients} clients over {convs} conversations in {:.0} ms: {:.0} sends/s, \
         {batches} batches, {:.1} jobs and {:.0} µs per batch",
        elapsed.as_secs_f64() * 1e3,
        sends as f64 / elapsed.as_secs_f64(),
        jobs as f64 / batches.max(1) as f64,
        (micros.sum - micros_before.sum) as f64 / batches.max(1) as f64,
    );
    let mut prev = 0;
    let buckets: Vec<String> = after
        .buckets
        .iter()
        .zip(&before.buckets)
        .filter_map(|((bound, a), (_, b))| {
            let n = a - b - prev;
            prev = a - b;
            (n > 0).then(|| format!("<={}: {n}", bound.map_or("inf".into(), |b| b.to_string())))
        })
        .collect();
    report.push_str(&format!("\nbatch sizes: {}", buckets.join(", ")));

    store.shutdown().await;
    drop(store);
    if backend != "sqlite" {
        admin_sql(&admin, &format!("DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")).await;
    }
    println!("{report}");
}

async fn admin_sql(url: &str, sql: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    client.batch_execute(sql).await.expect(sql);
}

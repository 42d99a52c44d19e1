//! What only the PostgreSQL backend promises: several nodes on one database, migrations run
//! from several nodes at once, and a writer that outlives its connection.

use parley_core::ids::{ConversationId, Seq, UserId};
use std::sync::Arc;
use std::time::Duration;

use parley_core::MessageKind;
use parley_store::{NewMessage, Store, StoreError};
use parley_store_postgres::{ConnectError, PgStore};
use tokio::sync::mpsc;

use crate::database::{Proxy, TestDatabase};

async fn node(db: &TestDatabase, id: u16) -> Arc<dyn Store> {
    let (tx, mut rx) = mpsc::channel(1024);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    Arc::new(PgStore::connect(&db.url, id, true, tx).await.expect("connect"))
}

fn text(conv: i64, sender: i64, client_id: String) -> NewMessage {
    NewMessage {
        conversation_id: ConversationId(conv),
        sender_id: UserId(sender),
        sender_device_id: None,
        client_id: Some(client_id),
        kind: MessageKind::Text,
        body: r#"{"text":"hi"}"#.into(),
        target_seq: None,
        media: Vec::new(),
        device_epoch: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_from_many_nodes() {
    let db = TestDatabase::create().await;
    let (tx, _rx) = mpsc::channel(1);
    let refused = PgStore::connect(&db.url, 1, false, tx).await.err().expect("an unmigrated database is refused");
    assert!(
        matches!(&refused, ConnectError::Store(StoreError::Backend(m)) if m.contains("parley migrate")),
        "{refused:?}"
    );
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { PgStore::migrate(&url).await })
        })
        .collect();
    for r in runs {
        r.await.unwrap().expect("migrate");
    }
    let versions = db.query_i64("SELECT count(*) FROM schema_migrations").await;
    assert_eq!(versions, db.query_i64("SELECT max(version)::int8 FROM schema_migrations").await);
    let (tx, _rx) = mpsc::channel(1);
    PgStore::connect(&db.url, 1, false, tx).await.expect("a migrated database is accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_is_used_by_one_node_at_a_time() {
    let db = TestDatabase::create().await;
    let first = node(&db, 7).await;
    let (tx, _rx) = mpsc::channel(1);
    let second = PgStore::connect(&db.url, 7, true, tx).await.err().expect("a second node 7 is refused");
    assert!(matches!(&second, ConnectError::NodeTaken(7)), "{second:?}");
    assert!(second.to_string().contains("node_id 7"), "{second}");
    first.shutdown().await;
    drop(first);
    node(&db, 7).await; // free again once the first has stopped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_a_conversation() {
    let db = TestDatabase::create().await;
    let (n1, n2) = (node(&db, 1).await, node(&db, 2).await);
    let a = n1.create_user("alice", "Alice", "h").await.unwrap().id;
    let b = n2.create_user("bob", "Bob", "h").await.unwrap().id;
    let (conv, _) = n1.create_direct(a, b, false).await.unwrap();
    assert_eq!(n2.create_direct(b, a, false).await.unwrap(), (conv, false));
    // Both nodes send into one conversation at once; every client_id is sent through both
    // nodes (a client retrying elsewhere), so half the sends are repeats of the other half.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = if t % 2 == 0 { n1.clone() } else { n2.clone() };
        let sender = if t % 4 < 2 { a } else { b };
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..40 {
                let m = store.send(text(conv.0, sender.0, format!("t{}-{i}", t / 2))).await.unwrap();
                out.push((m.message.seq, m.message.message_id, m.duplicate));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let mut fresh: Vec<i64> = all.iter().filter(|m| !m.2).map(|m| m.0.0).collect();
    fresh.sort_unstable();
    assert_eq!(fresh, (2..=161).collect::<Vec<i64>>(), "one entry per client_id, gap-free");
    let mut ids: Vec<i64> = all.iter().filter(|m| !m.2).map(|m| m.1.0).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 160, "message ids are unique across nodes");
    assert_eq!(all.iter().filter(|m| m.2).count(), 160, "every repeat returned the original");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_outlives_its_connection() {
    let db = TestDatabase::create().await;
    let store = node(&db, 1).await;
    let a = store.create_user("alice", "Alice", "h").await.unwrap().id;
    let (conv, _) = store.create_direct(a, a, false).await.unwrap();
    store.send(text(conv.0, a.0, "before".into())).await.unwrap();
    db.terminate_connections().await;
    // Each send either succeeds or says the store is unavailable (never hangs), and the writer
    // comes back on its own.
    let mut next = 0;
    let mut seqs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seqs.len() < 5 {
        assert!(tokio::time::Instant::now() < deadline, "the writer did not come back");
        let sent = tokio::time::timeout(Duration::from_secs(10), store.send(text(conv.0, a.0, format!("after{next}"))))
            .await
            .expect("a send never hangs");
        match sent {
            Ok(m) => {
                seqs.push(m.message.seq);
                next += 1;
            }
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(seqs, [3, 4, 5, 6, 7].map(Seq).to_vec());
    db.terminate_connections().await;
    // Reads come back too: the pool drops closed connections.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store.conversation(a, conv, false).await {
            Ok(view) => {
                assert_eq!(view.unwrap().last_seq, Seq(7));
                break;
            }
            Err(StoreError::Unavailable(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_rides_out_an_outage() {
    let db = TestDatabase::create().await;
    let proxy = Proxy::start().await;
    let (tx, mut rx) = mpsc::channel(1024);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let store = PgStore::connect(&proxy.url(&db.url), 1, true, tx).await.expect("connect");
    let a = store.create_user("alice", "Alice", "h").await.unwrap().id;
    let (conv, _) = store.create_direct(a, a, false).await.unwrap();
    assert_eq!(store.send(text(conv.0, a.0, "before".into())).await.unwrap().message.seq, Seq(2));

    proxy.down();
    // While the server cannot be reached, writes and reads are answered, and say so.
    for i in 0..3 {
        let sent = tokio::time::timeout(Duration::from_secs(10), store.send(text(conv.0, a.0, format!("during{i}"))))
            .await
            .expect("a send never hangs");
        assert!(matches!(sent, Err(StoreError::Unavailable(_))), "{sent:?}");
    }
    let read = tokio::time::timeout(Duration::from_secs(10), store.history(a, conv, Default::default()))
        .await
        .expect("a read never hangs");
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");

    proxy.up();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let seq = loop {
        match store.send(text(conv.0, a.0, "after".into())).await {
            Ok(m) => break m.message.seq,
            Err(StoreError::Unavailable(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("the writer did not come back: {e:?}"),
        }
    };
    assert_eq!(seq, Seq(3), "nothing was written during the outage");
}

//! The store conformance suite: every promise of the `Store` trait, checked through the trait
//! only. `store_tests!` stamps out each test once per backend, so a new backend (PostgreSQL)
//! adds one `store_tests!` line and must pass the same suite.

mod conformance;
mod pg_cluster;
mod pg_database;

use std::sync::Arc;

use parley_store::{PgStore, SqliteStore, Store, StoreEvent};
use tokio::sync::mpsc;

/// A backend under test, with the events it publishes and what is needed to reopen it.
pub struct Harness {
    pub store: Arc<dyn Store>,
    pub events: mpsc::Receiver<Vec<StoreEvent>>,
    data: Data,
}

/// Where a backend under test keeps its data; dropped (and deleted) with the harness.
enum Data {
    Sqlite(tempfile::TempDir),
    Postgres(pg_database::TestDatabase),
}

impl Harness {
    pub async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        Harness::open(Data::Sqlite(dir)).await
    }

    /// A fresh database on the local server (`PARLEY_TEST_POSTGRES`), dropped afterwards.
    pub async fn postgres() -> Harness {
        Harness::open(Data::Postgres(pg_database::TestDatabase::create().await)).await
    }

    async fn open(data: Data) -> Harness {
        let (tx, events) = mpsc::channel(1024);
        let store: Arc<dyn Store> = match &data {
            Data::Sqlite(dir) => Arc::new(SqliteStore::open(dir.path(), 1, tx).expect("open")),
            Data::Postgres(db) => Arc::new(PgStore::connect(&db.url, 1, true, tx).await.expect("connect")),
        };
        Harness { store, events, data }
    }

    /// Closes the store and opens it again on the same data, as a restart would.
    pub async fn reopen(self) -> Harness {
        self.store.shutdown().await;
        drop(self.store);
        Harness::open(self.data).await
    }

    /// Every event published so far.
    pub fn drain(&mut self) -> Vec<StoreEvent> {
        let mut out = Vec::new();
        while let Ok(batch) = self.events.try_recv() {
            out.extend(batch);
        }
        out
    }
}

/// Declares each test function in `conformance` once per backend.
macro_rules! store_tests {
    ($backend:ident: $($name:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::conformance::$name(crate::Harness::$backend().await).await;
                }
            )*
        }
    };
}

store_tests!(sqlite:
    users_are_unique,
    devices_and_tokens,
    direct_conversations_are_one_per_pair,
    sends_are_gap_free_and_published_in_order,
    sends_are_idempotent_per_sender,
    strangers_cannot_send_or_read,
    history_pages,
    backlog_follows_cursors,
    pointers_only_grow_and_emit_receipts,
    receipts_count_from_pointers,
    concurrent_sends_stay_gap_free,
    everything_survives_a_reopen,
    groups_follow_membership_windows,
    groups_are_capped_at_1024,
    edits_deletes_and_reactions_follow_the_rules,
    bulk_accounts_are_all_or_nothing,
);

store_tests!(postgres:
    users_are_unique,
    devices_and_tokens,
    direct_conversations_are_one_per_pair,
    sends_are_gap_free_and_published_in_order,
    sends_are_idempotent_per_sender,
    strangers_cannot_send_or_read,
    history_pages,
    backlog_follows_cursors,
    pointers_only_grow_and_emit_receipts,
    receipts_count_from_pointers,
    concurrent_sends_stay_gap_free,
    everything_survives_a_reopen,
    groups_follow_membership_windows,
    groups_are_capped_at_1024,
    edits_deletes_and_reactions_follow_the_rules,
    bulk_accounts_are_all_or_nothing,
);

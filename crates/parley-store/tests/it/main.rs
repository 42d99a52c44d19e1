//! The store conformance suite: every promise of the `Store` trait, checked through the trait
//! only. `store_tests!` stamps out each test once per backend, so a new backend (PostgreSQL)
//! adds one line to `backends!` and must pass the same suite.

mod conformance;

use std::sync::Arc;

use parley_store::{SqliteStore, Store, StoreEvent};
use tokio::sync::mpsc;

/// A backend under test, with the events it publishes and what is needed to reopen it.
pub struct Harness {
    pub store: Arc<dyn Store>,
    pub events: mpsc::Receiver<Vec<StoreEvent>>,
    dir: tempfile::TempDir,
}

impl Harness {
    pub fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, events) = mpsc::channel(1024);
        let store = Arc::new(SqliteStore::open(dir.path(), 1, tx).expect("open"));
        Harness { store, events, dir }
    }

    /// Closes the store and opens it again on the same data, as a restart would.
    pub async fn reopen(self) -> Harness {
        self.store.shutdown().await;
        let (tx, events) = mpsc::channel(1024);
        let store = Arc::new(SqliteStore::open(self.dir.path(), 1, tx).expect("reopen"));
        Harness { store, events, dir: self.dir }
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
                    crate::conformance::$name(crate::Harness::$backend()).await;
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

//! The SQLite backend against the store conformance suite (`parley_store::conformance`), each
//! test on a fresh data directory that is deleted afterwards.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parley_store::conformance::Backend;
use parley_store::{EventSender, Store};
use parley_store_sqlite::SqliteStore;

/// A data directory under test, deleted when dropped.
struct Sqlite(tempfile::TempDir);

impl Backend for Sqlite {
    fn open(&self, events: EventSender) -> Pin<Box<dyn Future<Output = Arc<dyn Store>> + Send + '_>> {
        Box::pin(async move { Arc::new(SqliteStore::open(self.0.path(), 1, events).expect("open")) as Arc<dyn Store> })
    }
}

async fn sqlite() -> Sqlite {
    Sqlite(tempfile::tempdir().expect("tempdir"))
}

parley_store::store_conformance!(sqlite());

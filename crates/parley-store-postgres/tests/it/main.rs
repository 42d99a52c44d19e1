//! The PostgreSQL backend against the store conformance suite (`parley_store::conformance`),
//! each test on a fresh database on `PARLEY_TEST_POSTGRES` (default the local server) that is
//! dropped afterwards; plus what only a shared database has (`cluster`): two nodes writing one
//! conversation, concurrent migrations, a lost connection, an outage through a proxy the test cuts.

mod cluster;
mod database;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parley_store::conformance::Backend;
use parley_store::{EventSender, Store};
use parley_store_postgres::PgStore;

/// A database under test, dropped when this is.
struct Postgres(database::TestDatabase);

impl Backend for Postgres {
    fn open(&self, events: EventSender) -> Pin<Box<dyn Future<Output = Arc<dyn Store>> + Send + '_>> {
        Box::pin(async move {
            Arc::new(PgStore::connect(&self.0.url, 1, true, events).await.expect("connect")) as Arc<dyn Store>
        })
    }
}

async fn postgres() -> Postgres {
    Postgres(database::TestDatabase::create().await)
}

parley_store::store_conformance!(postgres());

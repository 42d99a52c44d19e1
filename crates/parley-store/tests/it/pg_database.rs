//! A throwaway database per PostgreSQL test, on the server named by `PARLEY_TEST_POSTGRES`.

use std::sync::atomic::{AtomicU32, Ordering};

/// The server the tests use, as a URL naming a database the tests may connect to.
fn admin_url() -> String {
    std::env::var("PARLEY_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `url` with its database name replaced by `name`.
fn with_dbname(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

async fn admin() -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await.expect("connect to PARLEY_TEST_POSTGRES");
    tokio::spawn(connection);
    client
}

/// A database made for one test and dropped with it.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    /// `parley_test_<pid>_<counter>_<random>`: unique among concurrent test processes.
    pub async fn create() -> TestDatabase {
        use std::hash::{BuildHasher, Hasher};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish() as u32;
        let name =
            format!("parley_test_{}_{}_{random:08x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        admin().await.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create the test database");
        TestDatabase { url: with_dbname(&admin_url(), &name), name }
    }
}

impl Drop for TestDatabase {
    /// Drops the database (closing the store's connections first), on a thread of its own so as
    /// not to need the test's runtime, which may be shutting down.
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async { admin().await.batch_execute(&sql).await })
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {done:?}", self.name);
        }
    }
}

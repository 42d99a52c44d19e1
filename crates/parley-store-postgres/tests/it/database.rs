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
pub(crate) struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    /// `parley_test_<pid>_<counter>_<random>`: unique among concurrent test processes.
    pub(crate) async fn create() -> TestDatabase {
        use std::hash::{BuildHasher, Hasher};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish() as u32;
        let name =
            format!("parley_test_{}_{}_{random:08x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        admin().await.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create the test database");
        TestDatabase { url: with_dbname(&admin_url(), &name), name }
    }

    /// The first column of the first row of `sql`, run in this database.
    pub(crate) async fn query_i64(&self, sql: &str) -> i64 {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        client.query_one(sql, &[]).await.expect(sql).get(0)
    }

    /// Ends every session on this database, as a server restart would.
    pub(crate) async fn terminate_connections(&self) {
        admin()
            .await
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.name],
            )
            .await
            .expect("terminate");
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

/// A TCP forwarder between a store and the server that a test can cut and restore, as a
/// network failure or a server restart would.
pub(crate) struct Proxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards to the server of `PARLEY_TEST_POSTGRES`.
    pub(crate) async fn start() -> Proxy {
        let config: tokio_postgres::Config = admin_url().parse().expect("a postgres URL");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".into(),
        };
        let target = format!("{host}:{}", config.get_ports().first().copied().unwrap_or(5432));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, conns2) = (up.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is closed at once
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { port, up, conns, accept }
    }

    /// `url` (a database on the proxied server) reached through this proxy.
    pub(crate) fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let creds = authority.rsplit_once('@').map_or(String::new(), |(c, _)| format!("{c}@"));
        format!("{scheme}://{creds}127.0.0.1:{}/{path}", self.port)
    }

    /// Cuts every open connection and refuses new ones.
    pub(crate) fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub(crate) fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.down();
    }
}

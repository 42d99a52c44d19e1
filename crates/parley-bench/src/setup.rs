//! Accounts for a run, made through the public API with random names so runs never collide.

use parley_client::Client;
use parley_proto::Id;

use crate::Result;

pub struct BenchUser {
    pub user_id: Id,
    pub token: String,
    pub client: Client,
}

pub async fn users(server: &str, n: usize) -> Result<Vec<BenchUser>> {
    let run: u32 = rand::random();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("b{run:08x}_{i}");
        let client = Client::new(server);
        let user = client.create_account(&name, "bench-password", None).await?;
        let session = client.login(&name, "bench-password", Some("bench")).await?;
        out.push(BenchUser { user_id: user.user_id, client: client.with_token(&session.token), token: session.token });
    }
    Ok(out)
}

/// `n` accounts through the admin API (10,000 per call), named `{tag}{run}_...` so runs never
/// collide; each comes with one signed-in device.
pub async fn provision(
    server: &str,
    admin_token: &str,
    tag: char,
    n: usize,
) -> Result<Vec<parley_proto::rest::BulkAccount>> {
    let admin = Client::new(server).with_token(admin_token);
    let prefix = format!("{tag}{:08x}_", rand::random::<u32>());
    let mut accounts = Vec::with_capacity(n);
    crate::progress::phase("accounts", n as u64);
    while accounts.len() < n {
        let count = (n - accounts.len()).min(10_000);
        accounts.extend(
            admin.bulk_accounts(&format!("{prefix}{}_", accounts.len()), count as u32, "bench-password").await?,
        );
        crate::progress::add(count as u64);
    }
    Ok(accounts)
}

/// Pairs account 2k with 2k+1 in a direct conversation; returns one conversation per pair.
pub async fn pair_up(server: &str, accounts: &[parley_proto::rest::BulkAccount]) -> Result<Vec<Id>> {
    let mut convs = Vec::with_capacity(accounts.len() / 2);
    for pair in accounts.chunks_exact(2) {
        let c = Client::new(server).with_token(&pair[0].token);
        convs.push(c.create_direct(pair[1].user_id).await?.conversation_id);
    }
    Ok(convs)
}

/// Connections per local address before the next is used: one source address has ~28,000
/// ephemeral ports (Linux's default range) towards one server address and port.
const CONNS_PER_SOURCE: usize = 20_000;

/// The local addresses `n` connections to `server` should come from: none (the system's
/// choice) for a remote server or few connections, else `127.0.0.1`, `127.0.0.2`, ... (the whole
/// of `127.0.0.0/8` is this machine's loopback), one per 20,000 connections.
pub fn source_addrs(server: &str, n: usize) -> Vec<std::net::IpAddr> {
    let host = server.split("://").nth(1).unwrap_or(server).split(['/', ':']).next().unwrap_or("");
    let loopback = host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback()) || host == "localhost";
    if !loopback || n <= CONNS_PER_SOURCE {
        return Vec::new();
    }
    (1..=n.div_ceil(CONNS_PER_SOURCE).min(254) as u8).map(|i| std::net::IpAddr::from([127, 0, 0, i])).collect()
}

#[cfg(test)]
mod tests {
    use super::source_addrs;

    #[test]
    fn spreads_loopback_connections_over_source_addresses() {
        assert!(source_addrs("http://127.0.0.1:7700", 5_000).is_empty());
        assert!(source_addrs("http://chat.example.com:7700", 100_000).is_empty());
        let addrs = source_addrs("http://127.0.0.1:7700", 50_000);
        assert_eq!(addrs.len(), 3);
        assert_eq!(addrs[2].to_string(), "127.0.0.3");
        assert_eq!(source_addrs("http://localhost:7700", 40_001).len(), 3);
    }
}

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
    while accounts.len() < n {
        let count = (n - accounts.len()).min(10_000);
        accounts.extend(
            admin.bulk_accounts(&format!("{prefix}{}_", accounts.len()), count as u32, "bench-password").await?,
        );
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

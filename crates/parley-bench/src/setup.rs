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

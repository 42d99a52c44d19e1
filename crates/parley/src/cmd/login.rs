//! `parley login`: a new device session, remembered for `send` and `watch`.

use parley_client::Client;

use super::session::{self, Saved};
use crate::cli::LoginArgs;

pub(super) async fn run(args: LoginArgs) -> anyhow::Result<()> {
    let password = session::password(args.password)?;
    let client = Client::new(&args.server.server);
    let s = client.login(&args.username, &password, Some(&args.device_name)).await?;
    let path = session::save(&Saved {
        server: args.server.server.clone(),
        username: args.username.to_ascii_lowercase(),
        user_id: s.user_id.to_string(),
        device_id: s.device_id.to_string(),
        token: s.token,
    })?;
    println!("signed in as {} (device {}); session saved in {}", args.username, s.device_id, path.display());
    Ok(())
}

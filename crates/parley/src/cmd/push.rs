//! `parley push status|test`: the signed-in device's push registration, from the command line.

use parley_client::Client;

use super::session;
use crate::cli::PushCommand;

pub(super) async fn run(cmd: PushCommand) -> anyhow::Result<()> {
    let s = session::load()?;
    let client = Client::new(&s.server).with_token(&s.token);
    match cmd {
        PushCommand::Status => match client.push_status().await? {
            None => println!("not registered for pushes"),
            Some(p) => println!("{}", serde_json::to_string_pretty(&p)?),
        },
        PushCommand::Test => {
            let t = client.push_test().await?;
            if t.ok {
                println!("delivered to the provider (HTTP {})", t.status);
            } else {
                anyhow::bail!("the provider refused: HTTP {} {}", t.status, t.reason.unwrap_or_default());
            }
        }
    }
    Ok(())
}

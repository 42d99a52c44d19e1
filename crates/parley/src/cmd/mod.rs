//! One module per command.

mod serve;

use crate::cli::{Cli, Command};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Account(_) | Command::Login(_) | Command::Send(_) | Command::Watch(_) => {
            anyhow::bail!("not yet")
        }
    }
}

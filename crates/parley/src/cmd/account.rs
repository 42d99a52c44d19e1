//! `parley account create`.

use parley_client::Client;

use super::session;
use crate::cli::AccountCommand;

pub(super) async fn run(cmd: AccountCommand) -> anyhow::Result<()> {
    match cmd {
        AccountCommand::Create { username, display_name, password, server } => {
            let password = session::password(password)?;
            let user =
                Client::new(&server.server).create_account(&username, &password, display_name.as_deref()).await?;
            println!("created {} (user id {})", user.username, user.user_id);
            Ok(())
        }
    }
}

//! One module per command.

mod account;
mod bench;
mod e2ee;
mod login;
mod media;
mod push;
mod send;
mod serve;
mod session;
mod watch;

use crate::cli::{Cli, Command};

pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Migrate(args) => {
            parley_store_postgres::PgStore::migrate(&args.store).await?;
            eprintln!("the database is up to date");
            Ok(())
        }
        Command::Account(cmd) => account::run(cmd).await,
        Command::Login(args) => login::run(args).await,
        Command::Send(args) => send::run(args).await,
        Command::SendFile(args) => media::send_file(args).await,
        Command::Download(args) => media::download(args).await,
        Command::Watch(args) => watch::run(args).await,
        Command::Push(cmd) => push::run(cmd).await,
        Command::Keys(cmd) => e2ee::keys(cmd).await,
        Command::Bench(cmd) => bench::run(cmd).await,
    }
}

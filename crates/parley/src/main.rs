//! `parley`: the server, its admin commands and a small command-line client, in one binary.

mod backends;
mod cli;
mod cmd;
mod settings;

use clap::Parser;

/// mimalloc rather than glibc's malloc: under connection churn glibc's arena bookkeeping showed
/// up as ~13 % of server CPU in `perf` (many threads, many short-lived buffers).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("parley: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("parley: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

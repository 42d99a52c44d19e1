//! `parley serve`: load settings, set up logging, open the backends, bind, run until
//! SIGTERM/SIGINT, drain.

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::cli::{LogFormat, ServeArgs};
use crate::settings;

pub(super) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (config, backend_settings) = settings::load(&args)?;
    let filter = EnvFilter::try_new(args.log.as_deref().unwrap_or("info")).context("invalid --log filter")?;
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format.unwrap_or(LogFormat::Text) {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
    let listener = bind(&config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let backends = crate::backends::connect(&backend_settings, &config, listener.local_addr()?).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    parley_server::run(config, backends, listener, shutdown).await?;
    Ok(())
}

async fn stop_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    token.cancel();
}

/// Pending connections the kernel may queue for accept. The default (1,024) overflows when many
/// clients reconnect at once (after a restart or a network blip), and every overflowed SYN costs
/// its client a retransmit of a second or more; the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 16 * 1024;

async fn bind(listen: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(listen).await? {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")))
}

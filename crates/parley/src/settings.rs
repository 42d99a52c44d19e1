//! Layering of server settings: defaults, then the TOML file, then environment and flags
//! (clap has already merged those two, flags first).

use anyhow::Context;
use parley_server::Config;

use crate::cli::ServeArgs;

pub(crate) fn load(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str::<Config>(&text).with_context(|| format!("invalid settings in {}", path.display()))?
        }
        None => Config::default(),
    };
    macro_rules! layer {
        ($($field:ident),* $(,)?) => { $( if let Some(v) = &args.$field { cfg.$field = v.clone(); } )* };
    }
    layer!(
        listen,
        data_dir,
        node_id,
        send_rate_per_sec,
        send_burst,
        outbound_queue,
        max_pipeline,
        max_connections,
        auth_timeout_ms,
        ping_interval_ms,
        idle_timeout_ms,
        shutdown_timeout_ms,
        password_hash_concurrency,
        fanout_worker_threshold,
        fanout_workers,
        receipt_interval_ms,
        presence_grace_ms,
        typing_interval_ms,
        cluster,
    );
    for (arg, field) in [(&args.store, &mut cfg.store), (&args.nats, &mut cfg.nats), (&args.redis, &mut cfg.redis)] {
        if arg.is_some() {
            field.clone_from(arg);
        }
    }
    if args.no_migrate {
        cfg.migrate_on_start = false;
    }
    if args.admin_token.is_some() {
        cfg.admin_token = args.admin_token.clone();
    }
    if cfg.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
        anyhow::bail!("admin_token must be at least 16 characters");
    }
    if cfg.node_id.is_empty() || !cfg.node_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        anyhow::bail!("node_id must be letters, digits, '-' or '_' (it names the node on NATS and Redis)");
    }
    if cfg.store.as_deref().is_some_and(|s| !s.starts_with("postgres://") && !s.starts_with("postgresql://")) {
        anyhow::bail!("store must be a postgres:// URL (leave it unset for the embedded database)");
    }
    if cfg.nats.is_some() != cfg.redis.is_some() {
        anyhow::bail!("a cluster needs both nats and redis");
    }
    if cfg.clustered() && cfg.store.is_none() {
        anyhow::bail!("a cluster needs a shared store: set store to a postgres:// URL");
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\nsend_burst = 7\n").unwrap();
        let args = ServeArgs { config: Some(file), send_burst: Some(9), ..Default::default() };
        let cfg = load(&args).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:9000");
        assert_eq!(cfg.send_burst, 9);
        assert_eq!(cfg.outbound_queue, Config::default().outbound_queue);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "lissten = \"x\"\n").unwrap();
        let args = ServeArgs { config: Some(file), ..Default::default() };
        assert!(load(&args).is_err());
    }
}

//! Layering of server settings: defaults, then the TOML file, then environment and flags
//! (clap has already merged those two, flags first).

use anyhow::Context;
use parley_server::Config;

use crate::backends::BackendSettings;
use crate::cli::ServeArgs;

/// The server's settings and the backends' from one file and command line: the file's keys that
/// name a backend setting go to [`BackendSettings`], the rest to the server's [`Config`]; both
/// refuse unknown keys.
pub(crate) fn load(args: &ServeArgs) -> anyhow::Result<(Config, BackendSettings)> {
    let (mut cfg, mut be) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let invalid = || format!("invalid settings in {}", path.display());
            let mut table: toml::Table = toml::from_str(&text).with_context(invalid)?;
            let mut backends = toml::Table::new();
            for key in BackendSettings::KEYS {
                if let Some(v) = table.remove(key) {
                    backends.insert(key.to_owned(), v);
                }
            }
            (
                table.try_into::<Config>().with_context(invalid)?,
                backends.try_into::<BackendSettings>().with_context(invalid)?,
            )
        }
        None => (Config::default(), BackendSettings::default()),
    };
    macro_rules! layer {
        ($on:ident: $($field:ident),* $(,)?) => { $( if let Some(v) = &args.$field { $on.$field = v.clone(); } )* };
    }
    layer!(be: data_dir, node_id, cluster);
    for (arg, field) in [
        (&args.apns_key_file, &mut be.apns_key_file),
        (&args.apns_ca_file, &mut be.apns_ca_file),
        (&args.fcm_service_account, &mut be.fcm_service_account),
    ] {
        if arg.is_some() {
            field.clone_from(arg);
        }
    }
    for (arg, field) in [
        (&args.apns_key_id, &mut be.apns_key_id),
        (&args.apns_team_id, &mut be.apns_team_id),
        (&args.apns_topic, &mut be.apns_topic),
        (&args.apns_url, &mut be.apns_url),
        (&args.fcm_url, &mut be.fcm_url),
        (&args.media_store, &mut be.media_store),
        (&args.public_url, &mut be.public_url),
    ] {
        if arg.is_some() {
            field.clone_from(arg);
        }
    }
    if let Some(s) = &args.push_vapid_subject {
        be.push_vapid_subject.clone_from(s);
    }
    if args.apns_background {
        be.apns_background = true;
    }
    if args.push_allow_private_endpoints {
        cfg.push_allow_private_endpoints = true;
    }
    layer!(cfg:
        listen,
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
        push_coalesce_ms,
        push_ttl_secs,
        push_device_per_minute,
        push_concurrency,
        push_lease_ms,
        push_timeout_ms,
        media_max_bytes,
        media_uploads_per_minute,
        media_upload_burst,
        media_daily_bytes,
        media_orphan_after_ms,
        media_gc_interval_ms,
        media_url_ttl_ms,
    );
    for (arg, field) in [(&args.store, &mut be.store), (&args.nats, &mut be.nats), (&args.redis, &mut be.redis)] {
        if arg.is_some() {
            field.clone_from(arg);
        }
    }
    if args.no_migrate {
        be.migrate_on_start = false;
    }
    if args.admin_token.is_some() {
        cfg.admin_token = args.admin_token.clone();
    }
    if cfg.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
        anyhow::bail!("admin_token must be at least 16 characters");
    }
    if be.node_id.is_empty() || !be.node_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        anyhow::bail!("node_id must be letters, digits, '-' or '_' (it names the node on NATS and Redis)");
    }
    if be.store.as_deref().is_some_and(|s| !s.starts_with("postgres://") && !s.starts_with("postgresql://")) {
        anyhow::bail!("store must be a postgres:// URL (leave it unset for the embedded database)");
    }
    if be.nats.is_some() != be.redis.is_some() {
        anyhow::bail!("a cluster needs both nats and redis");
    }
    if be.clustered() && be.store.is_none() {
        anyhow::bail!("a cluster needs a shared store: set store to a postgres:// URL");
    }
    if be.media_store.as_deref().is_some_and(|s| !s.starts_with("s3://")) {
        anyhow::bail!(
            "media_store must be an s3://bucket?endpoint=...&region=... URL (leave it unset for local files)"
        );
    }
    if let Some(u) = be.public_url.as_deref() {
        let ok = url::Url::parse(u).is_ok_and(|p| {
            matches!(p.scheme(), "http" | "https")
                && p.host().is_some()
                && p.query().is_none()
                && p.fragment().is_none()
        });
        if !ok {
            anyhow::bail!("public_url must be an absolute http:// or https:// URL such as https://chat.example.com");
        }
    }
    if cfg.media_url_ttl_ms == 0 || cfg.media_url_ttl_ms > parley_core::media::URL_TTL_MS as u64 {
        anyhow::bail!("media_url_ttl_ms must be 1 to 900000 (15 minutes)");
    }
    if cfg.media_max_bytes == 0 {
        anyhow::bail!("media_max_bytes must be at least 1");
    }
    if !(be.push_vapid_subject.starts_with("mailto:") || be.push_vapid_subject.starts_with("https:")) {
        anyhow::bail!("push_vapid_subject must be a mailto: or https: URL (RFC 8292)");
    }
    let apns = [&be.apns_key_id, &be.apns_team_id, &be.apns_topic];
    if be.apns_key_file.is_some() != apns.iter().all(|v| v.is_some())
        || (be.apns_key_file.is_none() && apns.iter().any(|v| v.is_some()))
    {
        anyhow::bail!("APNs needs all of apns_key_file, apns_key_id, apns_team_id and apns_topic");
    }
    Ok((cfg, be))
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
        let (cfg, _) = load(&args).unwrap();
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

    #[test]
    fn backend_keys_go_to_the_backends() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "node_id = \"gw-1\"\ncluster = \"eu\"\nsend_burst = 7\n").unwrap();
        let args = ServeArgs { config: Some(file), cluster: Some("us".into()), ..Default::default() };
        let (cfg, be) = load(&args).unwrap();
        assert_eq!((be.node_id.as_str(), be.cluster.as_str(), cfg.send_burst), ("gw-1", "us", 7));
    }
}

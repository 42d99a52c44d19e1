//! Chooses and builds the backends `parley serve` runs on, from the settings: SQLite or
//! PostgreSQL for the store, the in-process router or the cluster router over NATS and Redis.
//! The server itself never names a backend; it runs on what it is handed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parley_router::{ClusterBus, LocalRouter, Router};
use parley_router_cluster::{ClusterConfig, ClusterRouter};
use parley_server::{Backends, Config, PushProviders};
use parley_store::{EventSender, Store};
use parley_store_postgres::{ConnectError, PgStore};
use parley_store_sqlite::SqliteStore;

/// The backends' settings, layered like the server's (file, environment, flags) from the same
/// TOML file and command line; the server never sees them. No `Debug`: `store` may hold a
/// database password, and nothing here should ever be printed whole.
#[derive(Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct BackendSettings {
    /// Where the embedded database lives.
    pub data_dir: PathBuf,
    /// This node's name. A number 0–1023 is also the node number that is part of every id it
    /// makes; any other name maps to a number by a stable hash (and a node whose number is taken
    /// by another live node is refused at start). In a cluster it names the node in the session
    /// directory and on NATS, so it must be unique there.
    pub node_id: String,
    /// PostgreSQL URL (`postgres://...`): store everything there instead of the embedded
    /// database. Needed for a cluster.
    pub store: Option<String>,
    /// Apply the PostgreSQL migrations at start (else a database that is behind is refused and
    /// `parley migrate` must be run first).
    pub migrate_on_start: bool,
    /// NATS URL (`nats://...`): route between nodes. With `redis`, makes this node part of a cluster.
    pub nats: Option<String>,
    /// Redis URL (`redis://...`): the session directory and presence of a cluster.
    pub redis: Option<String>,
    /// The cluster's name: prefixes its NATS subjects, JetStream streams and Redis keys, so
    /// several clusters can share the same NATS and Redis.
    pub cluster: String,
    /// The contact in VAPID tokens (`mailto:` or `https:`), which push services may use to reach
    /// the operator.
    pub push_vapid_subject: String,
    /// APNs token authentication: the `.p8` key, its id, the team id and the app's bundle id.
    pub apns_key_file: Option<PathBuf>,
    pub apns_key_id: Option<String>,
    pub apns_team_id: Option<String>,
    pub apns_topic: Option<String>,
    /// Another APNs base URL and CA (a local fake).
    pub apns_url: Option<String>,
    pub apns_ca_file: Option<PathBuf>,
    /// Background pushes instead of alerts.
    pub apns_background: bool,
    /// The FCM service account key file (JSON), and another base URL (a local fake).
    pub fcm_service_account: Option<PathBuf>,
    pub fcm_url: Option<String>,
    /// Where uploads live: unset for files under the data dir (`media/`), or an S3-compatible
    /// store, `s3://bucket?endpoint=https://…&region=…` (credentials from the AWS variables).
    pub media_store: Option<String>,
    /// The address clients reach this server at (the local media store's URLs start with it)
    /// [default: http:// and the address it listens on].
    pub public_url: Option<String>,
}

impl Default for BackendSettings {
    fn default() -> Self {
        BackendSettings {
            data_dir: PathBuf::from("./parley-data"),
            node_id: "0".into(),
            store: None,
            migrate_on_start: true,
            nats: None,
            redis: None,
            cluster: "parley".into(),
            push_vapid_subject: "mailto:parley@localhost".into(),
            apns_key_file: None,
            apns_key_id: None,
            apns_team_id: None,
            apns_topic: None,
            apns_url: None,
            apns_ca_file: None,
            apns_background: false,
            fcm_service_account: None,
            fcm_url: None,
            media_store: None,
            public_url: None,
        }
    }
}

impl BackendSettings {
    /// The keys of the settings file that are these settings.
    pub(crate) const KEYS: [&'static str; 19] = [
        "data_dir",
        "node_id",
        "store",
        "migrate_on_start",
        "nats",
        "redis",
        "cluster",
        "push_vapid_subject",
        "apns_key_file",
        "apns_key_id",
        "apns_team_id",
        "apns_topic",
        "apns_url",
        "apns_ca_file",
        "apns_background",
        "fcm_service_account",
        "fcm_url",
        "media_store",
        "public_url",
    ];

    /// The node number (0–1023) in every id this node makes: `node_id` itself when it is one,
    /// else a stable hash of the name (FNV-1a), so a restarted node keeps its number.
    pub(crate) fn node_number(&self) -> u16 {
        if let Ok(n) = self.node_id.parse::<u16>()
            && n < 1024
        {
            return n;
        }
        let mut h: u32 = 0x811c_9dc5;
        for b in self.node_id.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        (h % 1024) as u16
    }

    /// Whether this node is part of a cluster (routes through NATS and Redis).
    pub(crate) fn clustered(&self) -> bool {
        self.nats.is_some() && self.redis.is_some()
    }
}

/// The store and router the settings ask for (`server` for the presence grace period the
/// cluster router keeps); `listening` is the address the server is bound to.
pub(crate) async fn connect(
    config: &BackendSettings,
    server: &Config,
    listening: std::net::SocketAddr,
) -> anyhow::Result<Backends> {
    let (events_tx, events) = parley_server::event_channel();
    let store: Arc<dyn Store> = match &config.store {
        Some(url) => Arc::new(connect_postgres(config, url, events_tx).await?),
        None => Arc::new(
            SqliteStore::open(&config.data_dir, config.node_number(), events_tx)
                .with_context(|| format!("cannot open the data directory {}", config.data_dir.display()))?,
        ),
    };
    // A cluster router when NATS and Redis are both configured, else the in-process one.
    let (router, cluster): (Arc<dyn Router>, Option<Arc<dyn ClusterBus>>) = match (&config.nats, &config.redis) {
        (Some(nats), Some(redis)) => {
            let mut c = ClusterConfig::new(nats, redis, &config.cluster, &node_name(&config.node_id));
            c.presence_grace = Duration::from_millis(server.presence_grace_ms);
            let cluster = Arc::new(ClusterRouter::connect(c).await.context("cluster")?);
            (cluster.clone(), Some(cluster))
        }
        _ => (Arc::new(LocalRouter::new()), None),
    };
    let description = match (&config.store, &cluster) {
        (Some(_), Some(_)) => format!("PostgreSQL, NATS, Redis; node {} of cluster {}", config.node_id, config.cluster),
        (Some(_), None) => "PostgreSQL".to_owned(),
        (None, _) => format!("SQLite in {}", config.data_dir.display()),
    };
    let push = push_providers(config, server, &*store).await?;
    let node = node_name(&config.node_id);
    let (media, media_description) = media_store(config, listening)?;
    if cluster.is_some() && config.media_store.is_none() {
        tracing::warn!(
            "media are stored under this node's data dir: in a cluster, uploads made through one node \
             cannot be downloaded through another; set media_store to a shared S3-compatible store"
        );
    }
    let description = format!("{description}; media {media_description}");
    Ok(Backends { store, events, router, cluster, description, push, node, media })
}

/// The media store: S3-compatible when `media_store` names one, else files under the data dir
/// served by this server at `public_url`.
fn media_store(
    config: &BackendSettings,
    listening: std::net::SocketAddr,
) -> anyhow::Result<(Arc<dyn parley_media::MediaStore>, String)> {
    if let Some(url) = &config.media_store {
        let store = parley_media_s3::S3Store::from_env(url).context("media_store")?;
        let description = format!("in {store:?}");
        return Ok((Arc::new(store), description));
    }
    let public = match &config.public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            if listening.ip().is_unspecified() {
                tracing::warn!(
                    "public_url is not set and the server listens on every address: media URLs will name \
                     {listening}, which clients cannot reach; set public_url to the address clients use"
                );
            }
            format!("http://{listening}")
        }
    };
    let dir = config.data_dir.join("media");
    let store = parley_media_fs::FsMedia::open(&dir, &public)
        .with_context(|| format!("cannot open the media directory {}", dir.display()))?;
    Ok((Arc::new(store), format!("under {}", dir.display())))
}

/// The push provider clients: Web Push always (with the deployment's VAPID key, made at first
/// start and kept in the store, so subscriptions survive restarts and every node signs alike),
/// APNs and FCM when their credentials are configured.
async fn push_providers(config: &BackendSettings, server: &Config, store: &dyn Store) -> anyhow::Result<PushProviders> {
    use parley_push::vapid::VapidKey;
    let timeout = Duration::from_millis(server.push_timeout_ms);
    let fresh = VapidKey::generate().context("cannot make a VAPID key")?;
    let stored = store.secret("vapid_pkcs8", fresh.pkcs8().to_vec()).await.context("cannot read the VAPID key")?;
    let vapid = VapidKey::from_pkcs8(&stored).context("the stored VAPID key")?;
    let web = parley_push::web::WebPush::new(
        vapid,
        config.push_vapid_subject.clone(),
        server.push_allow_private_endpoints,
        timeout,
    )
    .context("cannot build the Web Push client")?;
    let mut providers = PushProviders { web: Some(Arc::new(web)), apns: None, fcm: None };
    if let (Some(file), Some(key_id), Some(team_id), Some(topic)) =
        (&config.apns_key_file, &config.apns_key_id, &config.apns_team_id, &config.apns_topic)
    {
        let key_pem = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let ca_pem = match &config.apns_ca_file {
            Some(f) => Some(std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?),
            None => None,
        };
        let apns = parley_push::apns::Apns::new(parley_push::apns::ApnsConfig {
            key_pem,
            key_id: key_id.clone(),
            team_id: team_id.clone(),
            topic: topic.clone(),
            url: config.apns_url.clone(),
            ca_pem,
            background: config.apns_background,
            timeout,
        })
        .with_context(|| format!("APNs key {}", file.display()))?;
        providers.apns = Some(Arc::new(apns));
    }
    if let Some(file) = &config.fcm_service_account {
        let json = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let fcm = parley_push::fcm::Fcm::new(&json, config.fcm_url.clone(), timeout)
            .with_context(|| format!("FCM service account {}", file.display()))?;
        providers.fcm = Some(Arc::new(fcm));
    }
    Ok(providers)
}

/// Connects to PostgreSQL as this node. A numeric `node_id` is the node number, and a second node
/// with it is refused. A named node starts from its name's hash and takes the next number no
/// live node holds (ids only need a number unique among live nodes: each node also starts its
/// ids above every stored one).
async fn connect_postgres(config: &BackendSettings, url: &str, events: EventSender) -> anyhow::Result<PgStore> {
    let first = config.node_number();
    let named = config.node_id.parse::<u16>().is_err();
    let mut n = first;
    loop {
        match PgStore::connect(url, n, config.migrate_on_start, events.clone()).await {
            Err(ConnectError::NodeTaken(_)) if named => {
                n = (n + 1) % 1024;
                if n == first {
                    anyhow::bail!("storage: all 1,024 node numbers are in use");
                }
                tracing::info!(node = %config.node_id, number = n, "node number taken; trying the next");
            }
            other => return other.context("storage"),
        }
    }
}

/// This process's name in the cluster: the configured node id (made safe for NATS subjects)
/// and a random suffix, so two processes never share a name, even a node restarted before its
/// old entries expired, or two nodes given the same id by mistake.
fn node_name(node_id: &str) -> String {
    let base: String = node_id
        .chars()
        .take(40)
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    format!("{base}-{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::BackendSettings;

    #[test]
    fn node_numbers_come_from_numbers_or_names() {
        let with = |id: &str| BackendSettings { node_id: id.into(), ..BackendSettings::default() };
        assert_eq!(with("7").node_number(), 7);
        assert_eq!(with("1023").node_number(), 1023);
        let a = with("gateway-a").node_number();
        assert!(a < 1024);
        assert_eq!(a, with("gateway-a").node_number(), "stable across restarts");
        assert_ne!(a, with("gateway-b").node_number());
        assert!(with("1024").node_number() < 1024);
    }

    #[test]
    fn node_names_are_safe_and_unique() {
        let a = super::node_name("eu west.1");
        assert!(a.starts_with("eu_west_1-"), "{a}");
        assert_ne!(a, super::node_name("eu west.1"));
    }
}

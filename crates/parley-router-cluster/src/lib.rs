//! The cluster router: many nodes, one set of users, over NATS (frames between nodes, durable
//! fanout jobs on JetStream) and Redis (the session directory and presence).
//!
//! Each node keeps its own connections in a [`LocalRouter`] and delivers to them directly. For
//! the rest, one publishing task per node ([`publisher`]) takes what `deliver` queued, looks up
//! every recipient's nodes in one Redis round trip, and publishes one NATS message per
//! destination node (`parley.<cluster>.node.<node>`) carrying the frames, their log positions
//! and each frame's recipients on that node, in queue order. Each node subscribes to its own
//! subject and hands the frames to its connections ([`inbound`]). When Redis cannot be reached
//! the frames go once to every node (`parley.<cluster>.all`) instead, so delivery goes on.
//!
//! [`Router::flush`] is the hook for "acknowledged ⇒ delivered": it resolves when everything
//! queued before it has been published and flushed to NATS on an unbroken connection (and fails
//! if a frame was dropped or the connection dropped meanwhile), and the server answers `sent`
//! only after it.
//!
//! The directory ([`directory`]) maps users to nodes with expiring entries that each node
//! refreshes, so a dead node's users drop out by themselves; it also holds cluster-wide presence.
//! Large deliveries become jobs on a JetStream work queue ([`jobs`]) that any node carries out.
//!
//! Recovery: async-nats reconnects and resubscribes by itself; when it does, this node's
//! connections are told to resync (frames sent to it meanwhile were lost). When Redis comes back
//! (or turns out to have lost our entries), the node re-registers every local user and its
//! connections resync likewise. While a dependency is down, local delivery goes on.
//!
//! # In depth
//!
//! In cluster mode (`--nats` and `--redis` set) every node runs the same server over one
//! PostgreSQL database; a client may connect to any node. `ClusterRouter` keeps the node's own
//! connections in a `LocalRouter` and carries everything else. A process's name in the cluster is
//! its `node_id` plus a random suffix (`gw-1-3f9a0c21`), so two processes never share subjects or
//! directory entries, not even a node restarted before its old entries expired.
//!
//! **The session directory** (Redis, all keys under `parley:<cluster>:`). `dir:<user>` is a sorted
//! set of the nodes that have a connection of that user, each scored by when its entry expires, on
//! Redis's clock. A node writes its entry when a user's connection registers, and rewrites every
//! local user's entries in batches of 1,024 every `refresh_interval` (5 s; entries live 15 s), so
//! the entries of a node that died simply run out. When a node's last connection of a user closes,
//! its member `node` becomes `~node`, scored to expire after the presence grace period: the user
//! still counts as online, but no frame goes there any more. Every directory operation is one Lua
//! script (one round trip, atomic, on one clock). A connection's registration must be in Redis
//! before it reads its backlog (`Router::register` returns a future the connection awaits), the
//! cluster version of "register before replay": whatever commits after the backlog read finds the
//! entry.
//!
//! **Delivery.** `deliver(users, frame)` pushes to local connections at once, then queues the frame
//! for the node's one publishing task, so every destination gets this node's frames in queue
//! order. The publisher takes whatever is queued (up to 1,024 items), looks up every recipient of
//! all of them in one Redis call, and publishes one NATS message per destination node on
//! `parley.<cluster>.node.<node>`: that node's frames of the batch, each with its log position and
//! its recipients there (a binary format of our own, so the frame's JSON travels as is). Never one
//! message per recipient: a 1,000-member delivery over three nodes is three NATS messages. Each node
//! subscribes to its own subject and hands the frames to its `LocalRouter`. If the lookup fails,
//! the batch goes once to `parley.<cluster>.all` and every node picks its own recipients (and for a
//! second the directory is not asked). Kicks (`parley.<cluster>.kick`), membership invalidations
//! and presence changes are broadcast subjects every node hears; a node ignores its own.
//!
//! **Acknowledged ⇒ delivered** is the server's part (its `routed` module): a send's `sent` waits
//! for [`Router::flush`] after the commit.
//!
//! **Order and repeats.** NATS keeps one publisher's order per subscriber, so a node's frames reach
//! each other node in order; messages of one conversation committed on different nodes may still
//! cross, which connections repair (a gap is filled from the log, a repeat dropped), as they
//! always could.
//!
//! **Large conversations** (more than `fanout_worker_threshold` recipients) become a job on a
//! JetStream work-queue stream (`PARLEY_FANOUT_<cluster>`, file storage): the frame and its
//! recipients, computed by the committing node. Jobs are sharded over 8 durable pull consumers by
//! conversation, each with one job in flight cluster-wide, and every node pulls from all of them. A
//! node delivers a job through NATS (even to its own connections), waits for the flush, then acks;
//! the next job of the shard is handed out only after that, so NATS gives every node a
//! conversation's jobs in order. If the node dies first, JetStream redelivers the job after
//! `job_ack_wait` (30 s) to another node: repeats are possible (dropped by seq), loss is not. The
//! sender's `sent` waits for JetStream to store the job. (Push jobs do not exist yet; they would use
//! the same stream.)
//!
//! **Presence** spans nodes. Redis's `ps:<user>` holds the cluster's view (`on`, `ls` last seen,
//! `v` a version that only grows, at least Redis's clock in µs so it survives Redis losing its
//! data). A registration that finds the user offline marks them online and emits the change; when
//! a node's grace period for a user ends without them coming back there, it asks Redis
//! (`went_offline`), which marks them offline only if no other node has a live entry; every node
//! sweeps for users whose entries all expired (their node died) and marks them offline with an
//! estimated last seen. Changes are broadcast; each node keeps the newest version of each user its
//! connections watch and tells those watchers. `presence.rs` is unchanged in embedded mode; in a
//! cluster it leaves "online" to these events and adds the cluster's view to what it knows.
//! Privacy changes are broadcast too.
//!
//! **Recovery.** async-nats reconnects and resubscribes by itself; after it does (and a round trip
//! shows the subscriptions are back), every local connection gets `Kick::Resync` and re-reads the
//! log past its high-water marks in place, since frames sent to the node meanwhile are gone; the
//! same happens when the client reports that it dropped messages of a subscription that fell
//! behind. While
//! NATS is down the publisher drops what it cannot send at once (flush markers fail, so senders get
//! `unavailable`), and local delivery goes on. Redis: a failed write marks the directory dirty, and
//! each refresh checks a per-node marker key; after a failure, or when Redis lost our entries (it
//! keeps nothing on disk), the node rewrites every local user's entry and its connections resync.
//! Scripts reload themselves after a Redis restart (`NOSCRIPT`).
//!
//! **Health.** `Router::probe` measures a JetStream request (so NATS and JetStream answer) and a
//! Redis `PING`; `/readyz` is 503 when either fails, and `/metrics` shows each dependency's last
//! round trip and the router's counters (`parley_cluster_*`: node messages published and received,
//! frames dropped, directory lookups, jobs).
//!
//! **Limits.** Presence changes are broadcast to every node, which is fine for tens of nodes and
//! would want per-shard subjects beyond. Scripts build keys from the prefix, so Redis Cluster is
//! not supported (one Redis, with replicas if wanted). A NATS flush means written to the server's
//! socket, not processed by the receiving node; a node that dies with frames in its inbound buffer
//! is covered by its clients' resync on reconnect.

mod directory;
mod inbound;
mod jobs;
mod publisher;
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parley_core::ids::*;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use directory::{Directory, Op};
use parley_router::LocalRouter;
use parley_router::{
    ClusterBus, ClusterEvent, ConnHandle, Kick, Outbound, PresenceState, Probe, Registered, RouteAck, RouteError,
    Router, RouterStats,
};
use publisher::Outgoing;
use wire::PresenceMsg;

/// Settings of one node of a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub nats_url: String,
    pub redis_url: String,
    /// Names the cluster: every subject, stream and key carries it, so clusters (and test runs)
    /// sharing NATS and Redis never meet. Letters, digits, `-` and `_`.
    pub cluster: String,
    /// This node's name, unique in the cluster. Letters, digits, `-` and `_`.
    pub node: String,
    /// How long a user whose last connection closed still counts as online.
    pub presence_grace: Duration,
    /// How long a directory entry lives unless refreshed: how soon a dead node's users stop
    /// being routed to and go offline.
    pub directory_ttl: Duration,
    /// How often each node refreshes its entries (well under the ttl).
    pub refresh_interval: Duration,
    /// How often each node looks for users whose node died.
    pub sweep_interval: Duration,
    /// How long a fanout job may run on one node before JetStream gives it to another.
    pub job_ack_wait: Duration,
    /// Frames queued for other nodes before `deliver` drops them (while NATS is unreachable).
    pub publish_queue: usize,
    /// Whether this node carries out fanout jobs (every node does by default).
    pub consume_jobs: bool,
}

impl ClusterConfig {
    pub fn new(nats_url: &str, redis_url: &str, cluster: &str, node: &str) -> Self {
        ClusterConfig {
            nats_url: nats_url.to_owned(),
            redis_url: redis_url.to_owned(),
            cluster: cluster.to_owned(),
            node: node.to_owned(),
            presence_grace: Duration::from_secs(5),
            directory_ttl: Duration::from_secs(15),
            refresh_interval: Duration::from_secs(5),
            sweep_interval: Duration::from_secs(1),
            job_ack_wait: Duration::from_secs(30),
            publish_queue: 64 * 1024,
            consume_jobs: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid name {0:?}: use 1 to 64 letters, digits, '-' and '_'")]
    Name(String),
    #[error("nats: {0}")]
    Nats(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("jetstream: {0}")]
    JetStream(String),
}

/// How long a new connection waits for its directory entry before reading its backlog anyway.
const REGISTER_WAIT: Duration = Duration::from_secs(2);
/// Directory operations queued for the directory task.
const DIRECTORY_QUEUE: usize = 64 * 1024;
/// Directory operations per Redis round trip.
const DIRECTORY_BATCH: usize = 1024;
/// Users whose node died marked offline per sweep.
const SWEEP_LIMIT: usize = 512;
/// Events queued for the server.
const EVENT_QUEUE: usize = 16 * 1024;
/// How long a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The subjects of one cluster.
pub(crate) struct Subjects {
    prefix: String,
    pub all: String,
    pub kick: String,
    pub members: String,
    pub presence: String,
}

impl Subjects {
    fn new(cluster: &str) -> Self {
        let prefix = format!("parley.{cluster}");
        Subjects {
            all: format!("{prefix}.all"),
            kick: format!("{prefix}.kick"),
            members: format!("{prefix}.members"),
            presence: format!("{prefix}.presence"),
            prefix,
        }
    }

    pub(crate) fn node(&self, node: &str) -> String {
        format!("{}.node.{node}", self.prefix)
    }

    pub(crate) fn job(&self, shard: usize) -> String {
        format!("{}.jobs.{shard}", self.prefix)
    }

    pub(crate) fn jobs(&self) -> String {
        format!("{}.jobs.>", self.prefix)
    }
}

#[derive(Default)]
pub(crate) struct Stats {
    pub published: AtomicU64,
    pub received: AtomicU64,
    pub dropped: AtomicU64,
    pub lookups: AtomicU64,
    pub jobs_published: AtomicU64,
    pub jobs_done: AtomicU64,
}

/// What every task of the node shares.
pub(crate) struct Inner {
    pub node: String,
    pub subjects: Subjects,
    pub config: ClusterConfig,
    pub local: LocalRouter,
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub dir: Directory,
    pub out: mpsc::Sender<Outgoing>,
    dir_ops: mpsc::Sender<(Op, Option<oneshot::Sender<()>>)>,
    events: mpsc::Sender<ClusterEvent>,
    pub stats: Stats,
    /// Bumped whenever the NATS connection drops: a flush that spans a bump cannot promise that
    /// what it covers arrived.
    pub nats_epoch: Arc<AtomicU64>,
    pub cancel: CancellationToken,
}

impl Inner {
    /// Hands an event to the server; drops it (logged) if the server is not keeping up.
    pub(crate) fn event(&self, e: ClusterEvent) {
        if self.events.try_send(e).is_err() {
            tracing::warn!("cluster event queue full: dropping an event");
        }
    }

    /// Queues a message for a broadcast subject.
    pub(crate) fn broadcast(&self, subject: &str, payload: bytes::Bytes) {
        let item = Outgoing::Broadcast { subject: subject.to_owned(), payload };
        if self.out.try_send(item).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request and its answer on our NATS connection (a stream lookup, which also shows that
    /// JetStream answers). The server handles a connection's messages in order, so everything
    /// this node sent before (subscriptions included) has been taken in when it returns.
    pub(crate) async fn round_trip(&self) -> Result<Duration, String> {
        let started = Instant::now();
        match tokio::time::timeout(PROBE_TIMEOUT, self.js.get_stream(jobs::stream_name(&self.config.cluster))).await {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    }

    /// Local connections directly; the rest through the publishing task.
    pub(crate) fn deliver(&self, users: &[UserId], frame: &Outbound) {
        Router::deliver(&self.local, users, frame);
        if users.is_empty() {
            return;
        }
        self.queue_frames(users, frame, false);
    }

    /// Every recipient through NATS, this node's too (see [`Outgoing::Frames`]).
    pub(crate) fn deliver_in_nats_order(&self, users: &[UserId], frame: &Outbound) {
        self.queue_frames(users, frame, true);
    }

    fn queue_frames(&self, users: &[UserId], frame: &Outbound, include_self: bool) {
        let item = Outgoing::Frames { users: users.to_vec(), frame: frame.clone(), include_self };
        if self.out.try_send(item).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A marker behind everything queued so far; see [`Router::flush`].
    pub(crate) fn flush(&self) -> RouteAck {
        let (tx, rx) = oneshot::channel();
        let drops = self.stats.dropped.load(Ordering::SeqCst);
        if self.out.try_send(Outgoing::Flush { drops, done: tx }).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Box::pin(std::future::ready(Err(RouteError::Unavailable("publish queue full".into()))));
        }
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(RouteError::Unavailable("the router stopped".into()))) })
    }

    /// Tells this node's server and every other node about presence changes.
    fn presence_changes(&self, changes: Vec<PresenceState>) {
        for s in changes {
            self.broadcast(&self.subjects.presence, wire::encode_presence(&self.node, &PresenceMsg::State(s)));
            self.event(ClusterEvent::Presence { state: s, from_here: true });
        }
    }
}

/// One node's router. Dropping it stops its tasks; [`ClusterRouter::shutdown`] also lets the
/// queued directory writes and publishes go out first.
pub struct ClusterRouter {
    inner: Arc<Inner>,
    events: Mutex<Option<mpsc::Receiver<ClusterEvent>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl ClusterRouter {
    /// Connects to NATS and Redis, sets up the job stream, and starts this node's tasks. Fails if
    /// either cannot be reached now; after this, outages are ridden out.
    pub async fn connect(config: ClusterConfig) -> Result<ClusterRouter, ClusterError> {
        for name in [&config.cluster, &config.node] {
            if !valid_name(name) {
                return Err(ClusterError::Name(name.clone()));
            }
        }
        let nats_epoch = Arc::new(AtomicU64::new(0));
        let (reconnected_tx, reconnected_rx) = mpsc::channel::<Lost>(16);
        let epoch = nats_epoch.clone();
        let nats = async_nats::ConnectOptions::new()
            .name(format!("parley-{}-{}", config.cluster, config.node))
            .connection_timeout(Duration::from_secs(3))
            .client_capacity(64 * 1024)
            .subscription_capacity(64 * 1024)
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(50u64.saturating_mul(1 << attempts.min(6))).min(Duration::from_secs(2))
            })
            .event_callback(move |event| {
                let epoch = epoch.clone();
                let reconnected = reconnected_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            epoch.fetch_add(1, Ordering::SeqCst);
                            tracing::warn!("nats: disconnected");
                        }
                        async_nats::Event::Connected => {
                            let _ = reconnected.try_send(Lost::Reconnected);
                        }
                        // Messages for one of our subscriptions were dropped in the client.
                        async_nats::Event::SlowConsumer(_) => {
                            tracing::warn!("nats: this node fell behind and dropped messages");
                            let _ = reconnected.try_send(Lost::SlowConsumer);
                        }
                        other => tracing::debug!(event = %other, "nats event"),
                    }
                }
            })
            .connect(&config.nats_url)
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        let js = async_nats::jetstream::new(nats.clone());

        let redis_client = redis::Client::open(config.redis_url.as_str())?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = redis::aio::ConnectionManager::new_with_config(redis_client, manager_config).await?;
        let dir = Directory::new(
            conn,
            format!("parley:{}", config.cluster),
            config.node.clone(),
            config.directory_ttl,
            config.presence_grace,
        );

        // Set this node's marker now, so the first refresh does not take a fresh start for lost data.
        dir.write(&[], true).await?;
        dir.clear_devices().await?;
        let subjects = Subjects::new(&config.cluster);
        let stream = jobs::setup(&js, &config, &subjects).await?;
        let (out_tx, out_rx) = mpsc::channel(config.publish_queue.max(16));
        let (dir_tx, dir_rx) = mpsc::channel(DIRECTORY_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let inner = Arc::new(Inner {
            node: config.node.clone(),
            subjects,
            config: config.clone(),
            local: LocalRouter::new(),
            nats: nats.clone(),
            js,
            dir,
            out: out_tx,
            dir_ops: dir_tx,
            events: events_tx,
            stats: Stats::default(),
            nats_epoch,
            cancel: CancellationToken::new(),
        });

        let mut tasks = inbound::start(&inner).await?;
        // A round trip: the server has taken our subscriptions before anyone can learn of us.
        inner.round_trip().await.map_err(ClusterError::Nats)?;
        tasks.push(tokio::spawn(publisher::run(inner.clone(), out_rx)));
        tasks.push(tokio::spawn(directory_task(inner.clone(), dir_rx)));
        tasks.push(tokio::spawn(reconnects(inner.clone(), reconnected_rx)));
        if config.consume_jobs {
            tasks.extend(jobs::start(&inner, stream));
        }
        tracing::info!(cluster = %config.cluster, node = %config.node, "cluster router connected");
        Ok(ClusterRouter { inner, events: Mutex::new(Some(events_rx)), tasks: Mutex::new(tasks) })
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Stops this node: lets queued directory writes and publishes go out (briefly), then stops
    /// every task. Entries of connections still open linger until they expire, as after a crash.
    pub async fn shutdown(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while (self.inner.dir_ops.capacity() < self.inner.dir_ops.max_capacity()
            || self.inner.out.capacity() < self.inner.out.max_capacity())
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.nats.flush()).await;
        self.halt();
    }

    /// Stops every task at once, as if the node died: nothing more is published or refreshed.
    pub fn halt(&self) {
        self.inner.cancel.cancel();
        for t in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
    }

    /// [`ClusterRouter::halt`], then waits until every task has stopped, so nothing this node
    /// started is still on its way to Redis or NATS afterwards (a purge after it is final).
    pub async fn halt_and_wait(&self) {
        self.inner.cancel.cancel();
        let tasks: Vec<JoinHandle<()>> = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Deletes everything cluster `cluster` keeps in Redis and its JetStream stream (tests, or a
    /// cluster taken down for good). Its nodes should be stopped first.
    pub async fn purge(nats_url: &str, redis_url: &str, cluster: &str) -> Result<(), ClusterError> {
        let client = redis::Client::open(redis_url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        directory::delete_matching(&mut conn, &format!("parley:{cluster}:*")).await?;
        let nats = async_nats::connect(nats_url).await.map_err(|e| ClusterError::Nats(e.to_string()))?;
        jobs::purge(&async_nats::jetstream::new(nats), cluster).await
    }

    /// Deletes this cluster's directory and presence records in Redis, as a restart of Redis
    /// would (tests).
    pub async fn forget_directory(&self) -> Result<(), ClusterError> {
        Ok(self.inner.dir.purge().await?)
    }

    /// Breaks both connections, as a network blip or a restart of NATS and Redis would (tests).
    pub async fn drop_connections(&self) -> Result<(), ClusterError> {
        self.inner.nats.force_reconnect().await.map_err(|e| ClusterError::Nats(e.to_string()))?;
        // Kill our own Redis connection from a second one: the manager notices and reconnects.
        let client = redis::Client::open(self.inner.config.redis_url.as_str())?;
        let mut other = client.get_multiplexed_async_connection().await?;
        let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut self.inner.dir.conn()).await?;
        let _: redis::Value = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query_async(&mut other).await?;
        Ok(())
    }

    /// Writes this node's entries for every local user now, instead of at the next refresh.
    pub async fn refresh_now(&self) -> Result<(), ClusterError> {
        refresh(&self.inner, &mut false).await.map_err(ClusterError::Redis)
    }
}

impl Drop for ClusterRouter {
    fn drop(&mut self) {
        self.halt();
    }
}

#[async_trait]
impl Router for ClusterRouter {
    fn register(&self, conn: ConnHandle) -> Registered {
        let (user, device) = (conn.user_id, conn.device_id);
        self.inner.local.add(conn);
        // Other nodes' push workers ask whether this device is connected.
        let dir = self.inner.dir.clone();
        let marked = async move {
            if let Err(e) = dir.add_device(device).await {
                tracing::warn!(error = %e, "redis: cannot mark a device connected");
            }
        };
        let (tx, rx) = oneshot::channel();
        if self.inner.dir_ops.try_send((Op::Register(user), Some(tx))).is_err() {
            // The next refresh registers it.
            return Box::pin(async move {
                let _ = tokio::time::timeout(REGISTER_WAIT, marked).await;
            });
        }
        Box::pin(async move {
            let _ = tokio::time::timeout(REGISTER_WAIT, futures_util::future::join(rx, marked)).await;
        })
    }

    fn unregister(&self, user_id: UserId, conn_id: u64) {
        let device = self.inner.local.device_of(user_id, conn_id);
        if self.inner.local.remove(user_id, conn_id) {
            let _ = self.inner.dir_ops.try_send((Op::Linger(user_id, parley_core::now_ms()), None));
        }
        if let Some(device) = device
            && !self.inner.local.has_device(user_id, device)
        {
            let dir = self.inner.dir.clone();
            tokio::spawn(async move {
                if let Err(e) = dir.remove_device(device).await {
                    tracing::warn!(error = %e, "redis: cannot mark a device disconnected");
                }
            });
        }
    }

    fn deliver(&self, users: &[UserId], frame: &Outbound) {
        self.inner.deliver(users, frame);
    }

    fn flush(&self) -> RouteAck {
        self.inner.flush()
    }

    fn deliver_durably(
        &self,
        conversation_id: ConversationId,
        users: Vec<UserId>,
        frame: &Outbound,
    ) -> Option<RouteAck> {
        Some(jobs::submit(&self.inner, conversation_id, &users, frame))
    }

    fn kick_device(&self, user_id: UserId, device_id: DeviceId, why: Kick) {
        Router::kick_device(&self.inner.local, user_id, device_id, why);
        let payload = wire::encode_kick(&self.inner.node, user_id, device_id, why);
        self.inner.broadcast(&self.inner.subjects.kick, payload);
    }

    async fn is_online(&self, user_id: UserId) -> bool {
        if self.inner.local.has(user_id) {
            return true;
        }
        match self.inner.dir.states(&[user_id]).await {
            Ok(s) => s.first().is_some_and(|s| s.online),
            Err(e) => {
                tracing::warn!(error = %e, "redis: cannot read presence");
                false
            }
        }
    }

    async fn devices_online(&self, devices: &[(UserId, DeviceId)]) -> Vec<bool> {
        let mut out: Vec<bool> = devices.iter().map(|&(u, d)| self.inner.local.has_device(u, d)).collect();
        let mut users: Vec<UserId> = devices.iter().zip(&out).filter(|(_, on)| !**on).map(|(p, _)| p.0).collect();
        if users.is_empty() {
            return out;
        }
        users.sort_unstable();
        users.dedup();
        // Where each user has connections, then whether those nodes have this device.
        let nodes = match self.inner.dir.lookup(&users).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "redis: cannot look up connected devices");
                return out;
            }
        };
        let mut pairs: Vec<(&str, DeviceId)> = Vec::new();
        let mut at: Vec<usize> = Vec::new();
        for (i, &(u, d)) in devices.iter().enumerate() {
            if out[i] {
                continue;
            }
            for node in nodes.get(&u).into_iter().flatten().filter(|n| **n != self.inner.node) {
                pairs.push((node, d));
                at.push(i);
            }
        }
        if pairs.is_empty() {
            return out;
        }
        match self.inner.dir.devices_on(&pairs).await {
            Ok(found) => {
                for (i, on) in at.into_iter().zip(found) {
                    out[i] |= on;
                }
            }
            Err(e) => tracing::warn!(error = %e, "redis: cannot look up connected devices"),
        }
        out
    }

    fn connection_count(&self) -> usize {
        Router::connection_count(&self.inner.local)
    }

    async fn probe(&self) -> Vec<Probe> {
        let nats = self.inner.round_trip();
        let redis = async {
            match tokio::time::timeout(PROBE_TIMEOUT, self.inner.dir.ping()).await {
                Ok(Ok(d)) => Ok(d),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            }
        };
        let (nats, redis) = tokio::join!(nats, redis);
        vec![Probe { dependency: "nats", result: nats }, Probe { dependency: "redis", result: redis }]
    }

    fn stats(&self) -> RouterStats {
        let s = &self.inner.stats;
        RouterStats {
            node_messages_published: s.published.load(Ordering::Relaxed),
            node_messages_received: s.received.load(Ordering::Relaxed),
            frames_dropped: s.dropped.load(Ordering::Relaxed),
            directory_lookups: s.lookups.load(Ordering::Relaxed),
            jobs_published: s.jobs_published.load(Ordering::Relaxed),
            jobs_done: s.jobs_done.load(Ordering::Relaxed),
        }
    }

    async fn shutdown(&self) {
        ClusterRouter::shutdown(self).await
    }
}

#[async_trait]
impl ClusterBus for ClusterRouter {
    fn take_events(&self) -> Option<mpsc::Receiver<ClusterEvent>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn members_changed(&self, conversation_id: ConversationId, removed: Option<UserId>) {
        let payload = wire::encode_members(&self.inner.node, conversation_id, removed);
        self.inner.broadcast(&self.inner.subjects.members, payload);
    }

    fn visibility_changed(&self, user_id: UserId, visible: bool) {
        let msg = PresenceMsg::Visibility(user_id, visible);
        self.inner.broadcast(&self.inner.subjects.presence, wire::encode_presence(&self.inner.node, &msg));
    }

    async fn went_offline(&self, user_id: UserId, at: i64) -> Result<Option<PresenceState>, RouteError> {
        // A connection that came back here meanwhile keeps the user online.
        if self.inner.local.has(user_id) {
            return Ok(None);
        }
        let change = self.inner.dir.offline(user_id, at).await.map_err(|e| RouteError::Unavailable(e.to_string()))?;
        if let Some(s) = change {
            self.inner.broadcast(
                &self.inner.subjects.presence,
                wire::encode_presence(&self.inner.node, &PresenceMsg::State(s)),
            );
        }
        Ok(change)
    }

    async fn presence(&self, users: &[UserId]) -> Result<Vec<PresenceState>, RouteError> {
        self.inner.dir.states(users).await.map_err(|e| RouteError::Unavailable(e.to_string()))
    }
}

/// Writes registrations and lingers in batches as they come, refreshes every local user's entry
/// on a timer, and sweeps for users whose node died.
async fn directory_task(inner: Arc<Inner>, mut rx: mpsc::Receiver<(Op, Option<oneshot::Sender<()>>)>) {
    let mut refresh_tick = tokio::time::interval(inner.config.refresh_interval.max(Duration::from_millis(10)));
    refresh_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep_tick = tokio::time::interval(inner.config.sweep_interval.max(Duration::from_millis(10)));
    sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A write failed since the last full refresh: entries may be missing or stale.
    let mut dirty = false;
    let mut buf = Vec::with_capacity(DIRECTORY_BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut buf, DIRECTORY_BATCH) => {
                if n == 0 { return; }
                let ops: Vec<Op> = buf.iter().map(|(op, _)| *op).collect();
                match inner.dir.write(&ops, false).await {
                    Ok(w) => inner.presence_changes(w.online),
                    Err(e) => {
                        tracing::warn!(error = %e, "redis: cannot write the session directory");
                        dirty = true;
                    }
                }
                // Registered (or given up on): either way the connection may go on.
                buf.clear();
            }
            _ = refresh_tick.tick() => {
                if let Err(e) = refresh(&inner, &mut dirty).await {
                    tracing::warn!(error = %e, "redis: cannot refresh the session directory");
                    dirty = true;
                }
            }
            _ = sweep_tick.tick() => match inner.dir.sweep(SWEEP_LIMIT).await {
                Ok(changes) => inner.presence_changes(changes),
                Err(e) => tracing::debug!(error = %e, "redis: cannot sweep"),
            },
            _ = inner.cancel.cancelled() => return,
        }
    }
}

/// Rewrites this node's entry for every local user. If Redis lost them (or a write failed
/// before), this node's connections may have missed frames meanwhile: they resync.
async fn refresh(inner: &Inner, dirty: &mut bool) -> redis::RedisResult<()> {
    let users = inner.local.users();
    let mut lost = false;
    let mut first = true;
    let mut chunks = users.chunks(DIRECTORY_BATCH).peekable();
    // The marker is checked even with no users.
    if chunks.peek().is_none() {
        lost = inner.dir.write(&[], true).await?.lost;
    }
    for chunk in chunks {
        let ops: Vec<Op> = chunk.iter().map(|&u| Op::Register(u)).collect();
        let w = inner.dir.write(&ops, first).await?;
        lost |= w.lost;
        first = false;
        inner.presence_changes(w.online);
    }
    if lost || std::mem::take(dirty) {
        tracing::info!(users = users.len(), "session directory rewritten; local connections resync");
        inner.local.kick_all(Kick::Resync);
    }
    Ok(())
}

/// Why frames sent to this node may have been lost.
enum Lost {
    /// The connection dropped and is back (or a first connection, which the epoch tells apart).
    Reconnected,
    /// The client dropped messages of a subscription this node did not read fast enough.
    SlowConsumer,
}

/// After NATS reconnects (it resubscribes by itself), frames published to this node meanwhile
/// are gone: once a round trip shows the subscriptions are back, every local connection resyncs.
/// Likewise after the client dropped messages of a subscription that fell behind (at most one
/// resync a second, after the drops it covers).
async fn reconnects(inner: Arc<Inner>, mut rx: mpsc::Receiver<Lost>) {
    let mut seen_epoch = inner.nats_epoch.load(Ordering::SeqCst);
    let mut last_slow: Option<Instant> = None;
    loop {
        let lost = tokio::select! {
            r = rx.recv() => match r {
                Some(l) => l,
                None => return,
            },
            _ = inner.cancel.cancelled() => return,
        };
        match lost {
            Lost::Reconnected => {
                let epoch = inner.nats_epoch.load(Ordering::SeqCst);
                if epoch == seen_epoch {
                    continue;
                }
                seen_epoch = epoch;
                if let Err(e) = inner.round_trip().await {
                    tracing::debug!(error = %e, "nats: no round trip after reconnecting");
                }
                tracing::info!("nats: reconnected; local connections resync");
            }
            Lost::SlowConsumer => {
                // Drops in quick succession share one resync, which comes after the last of them.
                if let Some(t) = last_slow {
                    tokio::time::sleep(Duration::from_secs(1).saturating_sub(t.elapsed())).await;
                }
                while rx.try_recv().is_ok() {}
                seen_epoch = inner.nats_epoch.load(Ordering::SeqCst);
                last_slow = Some(Instant::now());
                // A reconnect may have been among them: subscriptions first, then the resync.
                let _ = inner.round_trip().await;
            }
        }
        inner.local.kick_all(Kick::Resync);
    }
}

//! The routing boundary: which connections a user has, and carrying frames to them.
//!
//! Delivery through a router is at-most-once on purpose: the log in the store is the truth, and a
//! device that misses a frame (queue full, node gone) gets it again from its cursor when it
//! resyncs. So `deliver` never waits: it pushes to bounded per-connection queues and, when one is
//! full, tells that connection to close with 4009 instead of stalling everyone else.
//!
//! Two implementations keep the same promises, checked by one conformance suite (`conformance`,
//! stamped out by each router crate's tests): [`LocalRouter`] (embedded mode, one process, here)
//! and `ClusterRouter` (many nodes over NATS and Redis, in the `parley-router-cluster` crate).
//! This crate must never depend on a transport (NATS, Redis, sockets). A cluster also carries presence and cache invalidations between nodes; that
//! part is the [`ClusterBus`] trait, which only the cluster router implements.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parley_core::ids::*;
use tokio::sync::mpsc;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod local;

pub use local::LocalRouter;

/// Where a `message` frame sits in its conversation's log. Connections use it to drop repeats
/// and to fill gaps from the log, so routing order never decides what a device sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogPosition {
    pub conversation_id: ConversationId,
    pub seq: Seq,
    /// The device that sent it: that device skips the frame (it got `sent` instead) but still
    /// counts the seq as seen.
    pub sender_device_id: Option<DeviceId>,
}

/// One encoded frame, shared by every recipient (cloning is a reference-count bump).
#[derive(Clone, Debug)]
pub struct Outbound {
    pub json: Bytes,
    pub position: Option<LogPosition>,
    /// Only for this device's connections (a to-device payload); `None`: every connection of
    /// each recipient.
    pub device: Option<DeviceId>,
}

/// What the server asks of a connection out of band.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kick {
    /// Its outbound queue overflowed (close 4009).
    TooSlow,
    /// Its device was signed out or deleted (close 4010).
    Revoked,
    /// Not a close: frames routed to this node may have been lost (its link to the other nodes
    /// was down), so the connection reads the log past what it has written, as on a reconnect.
    Resync,
}

/// A registered connection: how to reach it.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    /// Unique per connection within the process.
    pub id: u64,
    pub user_id: UserId,
    pub device_id: DeviceId,
    pub frames: mpsc::Sender<Outbound>,
    pub kicks: mpsc::Sender<Kick>,
}

/// Why routing could not promise delivery: the cluster transport is unreachable. The log still
/// has everything; devices get it when they resync.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("cluster transport unavailable: {0}")]
    Unavailable(String),
}

/// Resolves when what it covers has left this node (see [`Router::flush`]).
pub type RouteAck = Pin<Box<dyn Future<Output = Result<(), RouteError>> + Send + 'static>>;

/// Resolves when a registration is visible to every node (see [`Router::register`]).
pub type Registered = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// One external dependency's health: its name and the round trip of a probe, or why it failed.
#[derive(Clone, Debug)]
pub struct Probe {
    pub dependency: &'static str,
    pub result: Result<Duration, String>,
}

/// Counters for `/metrics` and tests. The in-process router has nothing to count here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Messages published to other nodes' subjects (each carries frames for many recipients).
    pub node_messages_published: u64,
    /// Messages received on this node's subjects from other nodes.
    pub node_messages_received: u64,
    /// Frames for other nodes dropped because the publish queue was full (transport down).
    pub frames_dropped: u64,
    /// Batched session-directory lookups.
    pub directory_lookups: u64,
    /// Large deliveries queued as durable jobs, and jobs this node has carried out.
    pub jobs_published: u64,
    pub jobs_done: u64,
}

/// Connection registry and frame carrier. The in-process implementation serves embedded mode;
/// a cluster implementation carries frames between nodes.
#[async_trait]
pub trait Router: Send + Sync + 'static {
    /// Adds a connection. The returned future resolves once deliveries to its user from any node
    /// reach this node: at once in-process; in a cluster, when the session directory holds the
    /// entry (or after a bounded wait while the directory is unreachable). A connection reads
    /// its backlog only after that, so nothing committed meanwhile can fall between the two.
    fn register(&self, conn: ConnHandle) -> Registered;
    fn unregister(&self, user_id: UserId, conn_id: u64);
    /// Pushes `frame` to every connection of every user in `users`, on whatever node.
    fn deliver(&self, users: &[UserId], frame: &Outbound);
    /// Resolves when everything this node handed to `deliver` (and the other carriers) before
    /// the call has left for the other nodes: published and flushed to the transport. At once
    /// in-process. Fanout awaits it before a sender hears `sent`.
    fn flush(&self) -> RouteAck;
    /// Hands a large delivery to a durable work queue that any node carries out (and another
    /// resumes if that node dies); resolves when the job is stored. `None`: this router has no
    /// such queue, and the caller delivers itself.
    fn deliver_durably(
        &self,
        conversation_id: ConversationId,
        users: Vec<UserId>,
        frame: &Outbound,
    ) -> Option<RouteAck>;
    /// Asks every connection of one device, on every node, to close.
    fn kick_device(&self, user_id: UserId, device_id: DeviceId, why: Kick);
    /// Whether `user` has at least one connection anywhere (in a cluster: or did within the
    /// presence grace period).
    async fn is_online(&self, user_id: UserId) -> bool;
    /// For each `(user, device)`, whether that device has a connection open on any node (a
    /// device with one gets its messages live and is not pushed).
    async fn devices_online(&self, devices: &[(UserId, DeviceId)]) -> Vec<bool>;
    /// Connections currently registered on this node.
    fn connection_count(&self) -> usize;
    /// The round trip to each external dependency (none in-process).
    async fn probe(&self) -> Vec<Probe>;
    fn stats(&self) -> RouterStats {
        RouterStats::default()
    }
    /// Sends what is still queued for other nodes, then stops the router's background work.
    /// Called once, last in the server's shutdown; the in-process router has nothing to do.
    async fn shutdown(&self) {}
}

/// A user's presence as the whole cluster sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceState {
    pub user_id: UserId,
    pub online: bool,
    /// When their last device went away, if the cluster knows.
    pub last_seen: Option<i64>,
    /// Orders changes of one user: a higher version is newer. 0 when nothing is recorded.
    pub version: u64,
}

/// What other nodes (or this node's session directory) tell the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A user came online or went offline cluster-wide. `from_here`: this node's directory found
    /// the change (a registration, or a sweep of a dead node's users), so this node records it.
    Presence { state: PresenceState, from_here: bool },
    /// A user changed whether they show their last seen.
    Visibility { user_id: UserId, visible: bool },
    /// A membership change was committed in this conversation (on another node); `removed` is
    /// the user who was removed or left, if any.
    MembersChanged { conversation_id: ConversationId, removed: Option<UserId> },
}

/// The cross-node services besides frames: presence that spans nodes, and invalidations. Only a
/// cluster has one; embedded mode keeps all of it in process.
#[async_trait]
pub trait ClusterBus: Send + Sync + 'static {
    /// The stream of [`ClusterEvent`]s for this node; there is one, and the first call takes it.
    fn take_events(&self) -> Option<mpsc::Receiver<ClusterEvent>>;
    /// Tells the other nodes that a membership change committed in `conversation_id` (removing
    /// `removed`, if it did). Covered by the next [`Router::flush`].
    fn members_changed(&self, conversation_id: ConversationId, removed: Option<UserId>);
    /// Tells the other nodes that `user_id` changed their last-seen privacy.
    fn visibility_changed(&self, user_id: UserId, visible: bool);
    /// This node's last connection of `user_id` closed at `at` and the grace period has passed
    /// without one coming back here. Returns the change (already sent to the other nodes) when
    /// that made the user offline everywhere; `None` while another node still has them.
    async fn went_offline(&self, user_id: UserId, at: i64) -> Result<Option<PresenceState>, RouteError>;
    /// The cluster-wide presence of each of `users`, in order.
    async fn presence(&self, users: &[UserId]) -> Result<Vec<PresenceState>, RouteError>;
}

//! The routing boundary: which connections a user has, and carrying frames to them.
//!
//! Delivery through a router is at-most-once on purpose: the log in the store is the truth, and a
//! device that misses a frame (queue full, node gone) gets it again from its cursor when it
//! resyncs. So `deliver` never waits: it pushes to bounded per-connection queues and, when one is
//! full, tells that connection to close with 4009 instead of stalling everyone else.

use bytes::Bytes;
use parley_core::ids::*;
use tokio::sync::mpsc;

pub mod local;

pub use local::LocalRouter;

/// Where a `message` frame sits in its conversation's log. Connections use it to drop repeats
/// and to fill gaps from the log, so routing order never decides what a device sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogPosition {
    pub conversation_id: ConversationId,
    pub seq: i64,
    /// The device that sent it: that device skips the frame (it got `sent` instead) but still
    /// counts the seq as seen.
    pub sender_device_id: Option<DeviceId>,
}

/// One encoded frame, shared by every recipient (cloning is a reference-count bump).
#[derive(Clone, Debug)]
pub struct Outbound {
    pub json: Bytes,
    pub position: Option<LogPosition>,
}

/// Why the server asks a connection to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kick {
    /// Its outbound queue overflowed (close 4009).
    TooSlow,
    /// Its device was signed out or deleted (close 4010).
    Revoked,
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

/// Connection registry and frame carrier. The in-process implementation serves embedded mode;
/// a cluster implementation carries frames between nodes.
pub trait Router: Send + Sync + 'static {
    fn register(&self, conn: ConnHandle);
    fn unregister(&self, user_id: UserId, conn_id: u64);
    /// Pushes `frame` to every connection of every user in `users`.
    fn deliver(&self, users: &[UserId], frame: &Outbound);
    /// Asks every connection of one device to close.
    fn kick_device(&self, user_id: UserId, device_id: DeviceId, why: Kick);
    /// Whether `user` has at least one connection.
    fn is_online(&self, user_id: UserId) -> bool;
    /// Connections currently registered on this node.
    fn connection_count(&self) -> usize;
}

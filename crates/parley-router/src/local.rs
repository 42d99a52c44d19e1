//! The in-process router of embedded mode: a sharded map from user to connections.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use parley_core::ids::*;
use tokio::sync::mpsc::error::TrySendError;

use crate::{ConnHandle, Kick, Outbound, Probe, Registered, RouteAck, Router};

/// Shards keep writers (connects, disconnects) from blocking deliveries to other users.
const SHARDS: usize = 64;

type Shard = RwLock<HashMap<UserId, Vec<ConnHandle>>>;

pub struct LocalRouter {
    shards: Box<[Shard]>,
    connections: AtomicUsize,
}

impl Default for LocalRouter {
    fn default() -> Self {
        LocalRouter {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            connections: AtomicUsize::new(0),
        }
    }
}

impl LocalRouter {
    pub fn new() -> Self {
        Self::default()
    }

    fn shard(&self, user: UserId) -> &Shard {
        // Snowflake ids' low bits are a per-millisecond sequence: mix before taking the modulus.
        let h = (user.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        &self.shards[h as usize % SHARDS]
    }

    /// Adds a connection; true when it is its user's first on this router.
    pub fn add(&self, conn: ConnHandle) -> bool {
        let mut map = self.shard(conn.user_id).write().unwrap_or_else(|e| e.into_inner());
        let conns = map.entry(conn.user_id).or_default();
        conns.push(conn);
        self.connections.fetch_add(1, Ordering::Relaxed);
        conns.len() == 1
    }

    /// Removes a connection; true when that was its user's last on this router.
    pub fn remove(&self, user_id: UserId, conn_id: u64) -> bool {
        let mut map = self.shard(user_id).write().unwrap_or_else(|e| e.into_inner());
        let Some(conns) = map.get_mut(&user_id) else { return false };
        let before = conns.len();
        conns.retain(|c| c.id != conn_id);
        if conns.len() == before {
            return false;
        }
        self.connections.fetch_sub(1, Ordering::Relaxed);
        if conns.is_empty() {
            map.remove(&user_id);
            return true;
        }
        false
    }

    /// Whether `user_id` has a connection here.
    pub fn has(&self, user_id: UserId) -> bool {
        self.shard(user_id).read().unwrap_or_else(|e| e.into_inner()).contains_key(&user_id)
    }

    /// Whether `device` of `user_id` has a connection here.
    pub fn has_device(&self, user_id: UserId, device: DeviceId) -> bool {
        let map = self.shard(user_id).read().unwrap_or_else(|e| e.into_inner());
        map.get(&user_id).is_some_and(|conns| conns.iter().any(|c| c.device_id == device))
    }

    /// The device a connection here belongs to.
    pub fn device_of(&self, user_id: UserId, conn_id: u64) -> Option<DeviceId> {
        let map = self.shard(user_id).read().unwrap_or_else(|e| e.into_inner());
        map.get(&user_id)?.iter().find(|c| c.id == conn_id).map(|c| c.device_id)
    }

    /// Every user with a connection here.
    pub fn users(&self) -> Vec<UserId> {
        let mut out = Vec::with_capacity(self.connections.load(Ordering::Relaxed));
        for shard in self.shards.iter() {
            out.extend(shard.read().unwrap_or_else(|e| e.into_inner()).keys().copied());
        }
        out
    }

    /// Sends `why` to every connection here.
    pub fn kick_all(&self, why: Kick) {
        for shard in self.shards.iter() {
            for c in shard.read().unwrap_or_else(|e| e.into_inner()).values().flatten() {
                let _ = c.kicks.try_send(why);
            }
        }
    }
}

#[async_trait]
impl Router for LocalRouter {
    fn register(&self, conn: ConnHandle) -> Registered {
        self.add(conn);
        Box::pin(std::future::ready(()))
    }

    fn unregister(&self, user_id: UserId, conn_id: u64) {
        self.remove(user_id, conn_id);
    }

    fn deliver(&self, users: &[UserId], frame: &Outbound) {
        for &user in users {
            let map = self.shard(user).read().unwrap_or_else(|e| e.into_inner());
            let Some(conns) = map.get(&user) else {
                continue;
            };
            for c in conns {
                match c.frames.try_send(frame.clone()) {
                    Ok(()) => {}
                    // A device's own message is only a position marker for that connection (it got
                    // `sent` instead); losing one costs a gap fill from the log, not a kick.
                    Err(TrySendError::Full(_))
                        if frame.position.is_some_and(|p| p.sender_device_id == Some(c.device_id)) => {}
                    Err(TrySendError::Full(_)) => {
                        let _ = c.kicks.try_send(Kick::TooSlow);
                    }
                    // The connection is going away and will unregister itself.
                    Err(TrySendError::Closed(_)) => {}
                }
            }
        }
    }

    /// Everything is delivered by the time `deliver` returns.
    fn flush(&self) -> RouteAck {
        Box::pin(std::future::ready(Ok(())))
    }

    fn deliver_durably(&self, _: ConversationId, _: Vec<UserId>, _: &Outbound) -> Option<RouteAck> {
        None
    }

    fn kick_device(&self, user_id: UserId, device_id: DeviceId, why: Kick) {
        let map = self.shard(user_id).read().unwrap_or_else(|e| e.into_inner());
        for c in map.get(&user_id).into_iter().flatten().filter(|c| c.device_id == device_id) {
            let _ = c.kicks.try_send(why);
        }
    }

    async fn is_online(&self, user_id: UserId) -> bool {
        self.has(user_id)
    }

    async fn devices_online(&self, devices: &[(UserId, DeviceId)]) -> Vec<bool> {
        devices.iter().map(|&(u, d)| self.has_device(u, d)).collect()
    }

    fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    async fn probe(&self) -> Vec<Probe> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::sync::mpsc;

    use super::*;

    fn conn(
        id: u64,
        user: i64,
        device: i64,
        queue: usize,
    ) -> (ConnHandle, mpsc::Receiver<Outbound>, mpsc::Receiver<Kick>) {
        let (frames, rx) = mpsc::channel(queue);
        let (kicks, krx) = mpsc::channel(2);
        (ConnHandle { id, user_id: UserId(user), device_id: DeviceId(device), frames, kicks }, rx, krx)
    }

    fn frame(s: &'static str) -> Outbound {
        Outbound { json: Bytes::from_static(s.as_bytes()), position: None, device: None }
    }

    #[test]
    fn delivers_to_every_connection_of_each_user() {
        let r = LocalRouter::new();
        let (c1, mut rx1, _) = conn(1, 10, 100, 8);
        let (c2, mut rx2, _) = conn(2, 10, 101, 8);
        let (c3, mut rx3, _) = conn(3, 20, 200, 8);
        r.add(c1);
        r.add(c2);
        r.add(c3);
        assert_eq!(r.connection_count(), 3);
        r.deliver(&[UserId(10)], &frame("a"));
        assert_eq!(&rx1.try_recv().unwrap().json[..], b"a");
        assert_eq!(&rx2.try_recv().unwrap().json[..], b"a");
        assert!(rx3.try_recv().is_err());
        r.unregister(UserId(10), 1);
        r.deliver(&[UserId(10), UserId(20)], &frame("b"));
        assert!(rx1.try_recv().is_err());
        assert!(rx2.try_recv().is_ok() && rx3.try_recv().is_ok());
        assert!(r.has(UserId(10)));
        r.unregister(UserId(10), 2);
        assert!(!r.has(UserId(10)));
        assert_eq!(r.connection_count(), 1);
    }

    #[test]
    fn a_full_queue_kicks_instead_of_blocking() {
        let r = LocalRouter::new();
        let (c, _rx, mut kicks) = conn(1, 10, 100, 2);
        r.add(c);
        for _ in 0..3 {
            r.deliver(&[UserId(10)], &frame("x"));
        }
        assert_eq!(kicks.try_recv().unwrap(), Kick::TooSlow);
    }

    #[test]
    fn a_full_queue_of_own_markers_does_not_kick() {
        let r = LocalRouter::new();
        let (c, _rx, mut kicks) = conn(1, 10, 100, 1);
        r.add(c);
        let own = Outbound {
            json: Bytes::from_static(b"m"),
            position: Some(crate::LogPosition {
                conversation_id: ConversationId(1),
                seq: Seq(1),
                sender_device_id: Some(DeviceId(100)),
            }),
            device: None,
        };
        for _ in 0..3 {
            r.deliver(&[UserId(10)], &own);
        }
        assert!(kicks.try_recv().is_err());
    }

    #[test]
    fn kicks_only_the_named_device() {
        let r = LocalRouter::new();
        let (c1, _r1, mut k1) = conn(1, 10, 100, 2);
        let (c2, _r2, mut k2) = conn(2, 10, 101, 2);
        r.add(c1);
        r.add(c2);
        r.kick_device(UserId(10), DeviceId(101), Kick::Revoked);
        assert!(k1.try_recv().is_err());
        assert_eq!(k2.try_recv().unwrap(), Kick::Revoked);
    }
}

/// The in-process router against the router conformance suite: one router under three names.
#[cfg(test)]
mod conformance {
    use std::sync::Arc;

    use crate::LocalRouter;
    use crate::conformance::{Harness, Nodes};

    struct Local(Arc<LocalRouter>);

    impl Harness for Local {
        fn nodes(&self) -> Nodes {
            Nodes { a: self.0.clone(), b: self.0.clone(), c: self.0.clone(), distributed: false }
        }

        async fn cleanup(self) {}
    }

    async fn local() -> Local {
        Local(Arc::new(LocalRouter::new()))
    }

    crate::router_conformance!(local());
}

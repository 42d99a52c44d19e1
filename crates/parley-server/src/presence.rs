//! Presence: who is online, when they were last seen, and who is told.
//!
//! Derived from connections, kept in memory: a user is online while a device of theirs is
//! connected. Going offline is published only after a grace period, so a device that reconnects
//! within it (a phone switching networks) produces no offline/online pair for its watchers; the
//! user's `last_seen` is still the moment their last device went away. `last_seen` reaches the
//! disk lazily (a coalesced, non-durable write), never on every connect. Changes go only to the
//! connections that subscribed, and only users who share a conversation may subscribe to each
//! other; anyone else gets one uninformative frame and never an update.
//!
//! In a cluster a user is online while any node has a connection of theirs, so the cluster
//! decides (through [`ClusterBus`]): this node still counts its own connections and runs the
//! grace timer, but a user comes online when the session directory says so (an event), and goes
//! offline when the last node's grace period ends ([`ClusterBus::went_offline`]) or a dead node's
//! entries expire (an event from the sweeper). Changes carry a version, so a watcher's node keeps
//! the newest whatever order they arrive in. Only watched users' cluster states are kept here.
//!
//! # In depth
//!
//! Presence never touches the disk on connect or disconnect. `Presence` counts each user's open
//! connections; the first one publishes `online: true` to the connections that watch the user, and
//! when the last one closes the user's `last_seen` is stamped in memory and a timer publishes
//! `online: false` after the grace period unless a connection came back first (so a reconnecting
//! phone does not flap). Only the published offline writes `last_seen` to the store, as a non-durable
//! (no fsync, coalesced) write. Watching is per connection: `presence_subscribe` checks, in one
//! query per id, that the two users share a conversation; a membership entry that removes someone
//! makes fanout recheck that user's subscriptions. Typing is checked against the in-memory member
//! windows and forwarded through the router like any frame.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use parley_core::ids::UserId;
use parley_proto::Id;
use parley_proto::frames::{Presence as PresenceFrame, ServerFrame};
use parley_router::{ClusterBus, Kick, Outbound, PresenceState};
use parley_store::Store;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ApiError;

/// In a cluster, the longest pause between tries to record a user going offline (about a minute
/// of tries in all).
const OFFLINE_RETRY_MAX: Duration = Duration::from_secs(16);

/// Where a subscribing connection gets its frames.
#[derive(Clone)]
pub(crate) struct Watcher {
    pub conn_id: u64,
    pub user_id: UserId,
    pub frames: mpsc::Sender<Outbound>,
    pub kicks: mpsc::Sender<Kick>,
}

#[derive(Default)]
struct State {
    /// Open connections per user.
    connections: HashMap<UserId, usize>,
    /// Users whose last connection closed and whose offline is not published yet, with the
    /// generation of the timer that will publish it.
    going_offline: HashMap<UserId, u64>,
    next_generation: u64,
    /// Last seen per user, as known in memory (newer than the disk).
    last_seen: HashMap<UserId, i64>,
    /// Whether each user shows their last seen (loaded from storage when first needed).
    visible: HashMap<UserId, bool>,
    /// Users whose storage record has been loaded.
    loaded: HashSet<UserId>,
    /// Watched user → the connections watching them.
    watchers: HashMap<UserId, HashMap<u64, Watcher>>,
    /// Connection → the users it watches.
    watching: HashMap<u64, HashSet<UserId>>,
    /// In a cluster: the newest cluster-wide state known of each watched user.
    views: HashMap<UserId, PresenceState>,
}

impl State {
    fn online(&self, user: UserId) -> bool {
        self.online_with(user, self.views.get(&user))
    }

    fn online_with(&self, user: UserId, view: Option<&PresenceState>) -> bool {
        self.connections.get(&user).is_some_and(|&n| n > 0)
            || self.going_offline.contains_key(&user)
            || view.is_some_and(|v| v.online)
    }

    /// The `presence` frame `viewer` may see about `user` (reciprocal last-seen privacy).
    fn frame(&self, viewer: UserId, user: UserId) -> PresenceFrame {
        self.frame_with(viewer, user, self.views.get(&user))
    }

    /// As [`State::frame`], with the cluster's view of `user` given.
    fn frame_with(&self, viewer: UserId, user: UserId, view: Option<&PresenceState>) -> PresenceFrame {
        let online = self.online_with(user, view);
        let shown = *self.visible.get(&user).unwrap_or(&true) && *self.visible.get(&viewer).unwrap_or(&true);
        let known = self.last_seen.get(&user).copied().max(view.and_then(|v| v.last_seen));
        let last_seen = if online || !shown { None } else { known };
        PresenceFrame { user_id: user.to_string(), online, last_seen }
    }

    /// Keeps `s` if it is newer than what is known of a watched user; true if it was kept.
    fn keep_view(&mut self, s: PresenceState) -> bool {
        if !self.watchers.contains_key(&s.user_id) || self.views.get(&s.user_id).is_some_and(|v| v.version >= s.version)
        {
            return false;
        }
        self.views.insert(s.user_id, s);
        true
    }

    /// Queues `user`'s current presence for each of their watchers.
    fn publish(&self, user: UserId) {
        let Some(watchers) = self.watchers.get(&user) else { return };
        // A change looks one of at most two ways (last seen shown or hidden, by the watcher's own
        // setting): encode each once and share the bytes, like any fanout.
        let mut encoded: [Option<Bytes>; 2] = [None, None];
        for w in watchers.values() {
            let shown = *self.visible.get(&w.user_id).unwrap_or(&true);
            let json = encoded[usize::from(shown)]
                .get_or_insert_with(|| Bytes::from(ServerFrame::Presence(self.frame(w.user_id, user)).to_json()))
                .clone();
            push_bytes(w, json);
        }
    }
}

/// What a stranger (or an id that does not exist) looks like: nothing.
fn uninformative(raw: &str) -> PresenceFrame {
    PresenceFrame { user_id: raw.to_owned(), online: false, last_seen: None }
}

fn parse(raw: &[String]) -> Vec<UserId> {
    raw.iter().map(|r| UserId(Id::parse(r).0)).collect()
}

fn push_bytes(w: &Watcher, json: Bytes) {
    match w.frames.try_send(Outbound { json, position: None, device: None }) {
        Ok(()) | Err(TrySendError::Closed(_)) => {}
        Err(TrySendError::Full(_)) => {
            let _ = w.kicks.try_send(Kick::TooSlow);
        }
    }
}

pub(crate) struct Presence {
    state: Mutex<State>,
    grace: Duration,
    /// The cluster's presence; `None` in embedded mode, where this node knows everything.
    cluster: Option<Arc<dyn ClusterBus>>,
    /// Where last seen and privacy are stored, and contacts are checked.
    store: Arc<dyn Store>,
    /// The app's background tasks: each grace timer runs on it, so shutdown can wait for the
    /// last-seen writes they end with.
    tasks: TaskTracker,
    /// Cancelled when the server drains: grace timers stop waiting then (the drain writes last
    /// seen times itself, and in a cluster the node's directory entries expire, so another
    /// node's sweep marks its users offline unless they reconnected elsewhere).
    shutdown: CancellationToken,
}

impl Presence {
    pub(crate) fn new(
        grace: Duration,
        cluster: Option<Arc<dyn ClusterBus>>,
        store: Arc<dyn Store>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Presence { state: Mutex::new(State::default()), grace, cluster, store, tasks, shutdown }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection of `user` authenticated.
    pub(crate) fn connected(&self, user: UserId) {
        let mut st = self.lock();
        let was_online = st.online(user);
        *st.connections.entry(user).or_default() += 1;
        // Back within the grace period: the pending offline is simply forgotten.
        st.going_offline.remove(&user);
        // In a cluster the session directory says whether this made the user online anywhere.
        if !was_online && self.cluster.is_none() {
            st.publish(user);
        }
    }

    /// A connection of `user` closed. When it was the last, the user goes offline after the
    /// grace period unless a device comes back first.
    pub(crate) fn disconnected(self: &Arc<Self>, user: UserId) {
        let now = parley_core::now_ms();
        let generation = {
            let mut st = self.lock();
            let n = st.connections.entry(user).or_default();
            *n = n.saturating_sub(1);
            if *n > 0 {
                return;
            }
            st.connections.remove(&user);
            st.last_seen.insert(user, now);
            st.next_generation += 1;
            let g = st.next_generation;
            st.going_offline.insert(user, g);
            g
        };
        let this = self.clone();
        self.tasks.spawn(async move { this.offline_after_grace(user, generation, now).await });
    }

    /// The grace timer of `user`'s last disconnection (at `now`, numbered `generation`): unless
    /// a device came back meanwhile, publishes the user offline and records their last seen.
    async fn offline_after_grace(&self, user: UserId, generation: u64, now: i64) {
        if !self.grace.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(self.grace) => {}
                () = self.shutdown.cancelled() => return,
            }
        }
        let published = {
            let mut st = self.lock();
            if st.going_offline.get(&user) == Some(&generation) {
                st.going_offline.remove(&user);
                if self.cluster.is_none() {
                    st.publish(user);
                }
                true
            } else {
                false
            }
        };
        if !published {
            return;
        }
        let mut at = now;
        if let Some(cluster) = &self.cluster {
            // Offline only if no other node has the user. While Redis cannot be reached this
            // is tried again for a while (a Redis that lost its data then still learns it).
            let mut wait = Duration::from_millis(500);
            let change = loop {
                match cluster.went_offline(user, now).await {
                    Ok(change) => break change,
                    Err(e) if wait <= OFFLINE_RETRY_MAX => {
                        tracing::debug!(error = %e, user = %user, "cannot record going offline yet");
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, user = %user, "cannot record going offline in the cluster");
                        return;
                    }
                }
            };
            let Some(change) = change else { return };
            at = change.last_seen.unwrap_or(now);
            self.apply(change);
        }
        if let Err(e) = self.store.set_last_seen(user, at).await {
            tracing::warn!(error = %e, user = %user, "cannot record last seen");
        }
    }

    /// In a cluster: a change of a user's cluster-wide presence (from any node, in any order).
    /// Watchers here hear of it if it changes what they see.
    pub(crate) fn apply(&self, s: PresenceState) {
        let mut st = self.lock();
        let seen = |st: &State| {
            let f = st.frame(s.user_id, s.user_id);
            (f.online, f.last_seen)
        };
        let before = seen(&st);
        if st.keep_view(s) && seen(&st) != before {
            st.publish(s.user_id);
        }
    }

    /// In a cluster: another node recorded a user's last-seen privacy.
    pub(crate) fn visibility(&self, user: UserId, visible: bool) {
        let mut st = self.lock();
        if st.loaded.contains(&user) {
            st.visible.insert(user, visible);
        }
    }

    /// The cluster's view of `users` (none on failure: then only this node's knowledge counts).
    async fn cluster_states(&self, users: &[UserId]) -> HashMap<UserId, PresenceState> {
        let Some(cluster) = &self.cluster else { return HashMap::new() };
        if users.is_empty() {
            return HashMap::new();
        }
        match cluster.presence(users).await {
            Ok(states) => states.into_iter().map(|s| (s.user_id, s)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read presence from the cluster");
                HashMap::new()
            }
        }
    }

    /// Loads what storage knows (last seen, privacy) about users not yet in memory.
    async fn load(&self, users: &[UserId]) {
        let missing: Vec<UserId> = {
            let st = self.lock();
            users.iter().copied().filter(|u| !st.loaded.contains(u)).collect()
        };
        if missing.is_empty() {
            return;
        }
        match self.store.presence_records(&missing).await {
            Ok(records) => {
                let mut st = self.lock();
                for r in records {
                    st.loaded.insert(r.user_id);
                    st.visible.insert(r.user_id, r.last_seen_visible);
                    if let Some(at) = r.last_seen {
                        let e = st.last_seen.entry(r.user_id).or_insert(at);
                        *e = (*e).max(at);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot load presence records"),
        }
    }

    /// Contacts among `users`, with their storage records loaded.
    async fn contacts(&self, viewer: UserId, users: &[UserId]) -> Result<HashSet<UserId>, ApiError> {
        let contacts: HashSet<UserId> = self.store.contacts_among(viewer, users).await?.into_iter().collect();
        let known: Vec<UserId> = contacts.iter().copied().chain([viewer]).collect();
        self.load(&known).await;
        Ok(contacts)
    }

    /// The presence `viewer` may see of each id in `raw` (as the client wrote them): real for
    /// contacts, uninformative for everyone else (strangers, unknown ids and non-ids alike).
    pub(crate) async fn snapshot(&self, viewer: UserId, raw: &[String]) -> Result<Vec<PresenceFrame>, ApiError> {
        let ids = parse(raw);
        let contacts = self.contacts(viewer, &ids).await?;
        let fetched = self.cluster_states(&contacts.iter().copied().collect::<Vec<_>>()).await;
        let st = self.lock();
        let newest = |u: UserId| match (st.views.get(&u), fetched.get(&u)) {
            (Some(a), Some(b)) => Some(if a.version >= b.version { a } else { b }),
            (a, b) => a.or(b),
        };
        Ok(raw
            .iter()
            .zip(&ids)
            .map(|(r, &u)| if contacts.contains(&u) { st.frame_with(viewer, u, newest(u)) } else { uninformative(r) })
            .collect())
    }

    /// `presence_subscribe`: watches the contacts among the ids and returns the one frame per id
    /// to answer with (the caller sends them as the reply, ahead of any later change).
    pub(crate) async fn subscribe(&self, watcher: Watcher, raw: &[String]) -> Result<Vec<PresenceFrame>, ApiError> {
        let ids = parse(raw);
        let contacts = self.contacts(watcher.user_id, &ids).await?;
        if self.cluster.is_some() {
            // Watch first, then read the cluster: a change after the read arrives as an event,
            // and one before it is in the read; versions sort out the overlap.
            {
                let mut st = self.lock();
                for &u in &contacts {
                    st.watchers.entry(u).or_default().insert(watcher.conn_id, watcher.clone());
                    st.watching.entry(watcher.conn_id).or_default().insert(u);
                }
            }
            let fetched = self.cluster_states(&contacts.iter().copied().collect::<Vec<_>>()).await;
            let mut st = self.lock();
            for s in fetched.into_values() {
                st.keep_view(s);
            }
            return Ok(raw
                .iter()
                .zip(&ids)
                .map(|(r, &u)| if contacts.contains(&u) { st.frame(watcher.user_id, u) } else { uninformative(r) })
                .collect());
        }
        let mut st = self.lock();
        let mut frames = Vec::with_capacity(ids.len());
        for (r, &u) in raw.iter().zip(&ids) {
            frames.push(if contacts.contains(&u) {
                st.watchers.entry(u).or_default().insert(watcher.conn_id, watcher.clone());
                st.watching.entry(watcher.conn_id).or_default().insert(u);
                st.frame(watcher.user_id, u)
            } else {
                uninformative(r)
            });
        }
        Ok(frames)
    }

    pub(crate) fn unsubscribe(&self, conn_id: u64, users: &[UserId]) {
        let mut st = self.lock();
        for u in users {
            if let Some(w) = st.watchers.get_mut(u) {
                w.remove(&conn_id);
                if w.is_empty() {
                    st.watchers.remove(u);
                    st.views.remove(u);
                }
            }
            if let Some(set) = st.watching.get_mut(&conn_id) {
                set.remove(u);
            }
        }
    }

    /// Forgets every subscription of a closed connection.
    pub(crate) fn connection_closed(&self, conn_id: u64) {
        let users: Vec<UserId> =
            self.lock().watching.remove(&conn_id).map(|s| s.into_iter().collect()).unwrap_or_default();
        self.unsubscribe(conn_id, &users);
    }

    /// `user` left or was removed from a conversation: end every subscription between them and
    /// someone they no longer share a conversation with.
    pub(crate) async fn revalidate(&self, user: UserId) {
        // Pairs involving `user`: (watcher connection, watcher user, watched user).
        let pairs: Vec<(u64, UserId, UserId)> = {
            let st = self.lock();
            let watched_by: Vec<(u64, UserId, UserId)> = st
                .watchers
                .get(&user)
                .into_iter()
                .flat_map(|m| m.values().map(|w| (w.conn_id, w.user_id, user)))
                .collect();
            let watching: Vec<(u64, UserId, UserId)> = st
                .watchers
                .iter()
                .flat_map(|(&watched, m)| {
                    m.values().filter(|w| w.user_id == user).map(move |w| (w.conn_id, user, watched))
                })
                .collect();
            watched_by.into_iter().chain(watching).collect()
        };
        if pairs.is_empty() {
            return;
        }
        let others: Vec<UserId> = pairs.iter().map(|&(_, a, b)| if a == user { b } else { a }).collect();
        let still: HashSet<UserId> = match self.store.contacts_among(user, &others).await {
            Ok(v) => v.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, user = %user, "cannot recheck presence subscriptions");
                return;
            }
        };
        for (conn, a, b) in pairs {
            let other = if a == user { b } else { a };
            if !still.contains(&other) {
                self.unsubscribe(conn, &[b]);
            }
        }
    }

    /// A user changed whether they show their last seen (already stored).
    pub(crate) fn set_visible(&self, user: UserId, visible: bool) {
        self.lock().visible.insert(user, visible);
        if let Some(cluster) = &self.cluster {
            cluster.visibility_changed(user, visible);
        }
    }

    /// On shutdown: writes the last seen of everyone whose offline is still pending, so users
    /// online at a graceful stop keep an accurate last seen after the restart.
    pub(crate) async fn flush_last_seen(&self) {
        let pending: Vec<(UserId, i64)> = {
            let st = self.lock();
            st.going_offline.keys().filter_map(|u| st.last_seen.get(u).map(|&at| (*u, at))).collect()
        };
        for (user, at) in pending {
            if let Err(e) = self.store.set_last_seen(user, at).await {
                tracing::warn!(error = %e, user = %user, "cannot record last seen at shutdown");
            }
        }
    }
}

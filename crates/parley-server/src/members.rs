//! The member cache: who may see which seqs of a conversation, kept in memory for fanout, typing
//! and gap filling so that none of them reads the member list from storage on every message.
//!
//! Each conversation's member windows are loaded on first use and dropped when a membership entry
//! passes through fanout (or another node says one did), so a member sees exactly the seqs of
//! their membership. In a cluster, another node may have committed a membership change between
//! two entries this node commits, so the cache can be checked against the log
//! ([`MemberCache::for_seq`]).
//!
//! # In depth
//!
//! Membership is a row per (conversation, user) with `joined_seq` and `left_seq`: the window of the
//! log that user may see. Every membership change is a log entry written in the same transaction
//! that changes the row, so the entry's seq is the boundary: `members_added` at seq S opens windows
//! at S, `member_removed`/`member_left` at seq S closes one at S (the removed member still receives
//! S). A re-added member's row is reopened with the new `joined_seq`; the old window is forgotten.
//!
//! Fanout never reads members from disk per message. `MemberCache` holds each conversation's
//! windows (past members included); it is filled on first use and dropped when a membership entry
//! passes through fanout, which happens in commit order. Recipients of seq S are the windows that
//! contain S, so even a cache loaded "too new" or "too old" sends S to exactly the right users.
//! Connections apply the same windows when they fill a gap from the log.
//!
//! # In a cluster
//!
//! **Member caches.** Fanout only sees its own node's commits, so a membership change committed on
//! another node reaches this node's `MemberCache` as a broadcast invalidation. That broadcast can
//! lose a race with a message this node commits right after, so in a cluster fanout also checks the
//! cache against the log: each cached list knows up to which seq it is exact, and when entries by
//! other nodes lie between that and the entry being routed, it reads them (up to 64, else reloads)
//! and reloads on a membership change. A 1:1 conversation whose two users write from different
//! nodes costs one small log read per message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use parley_core::ids::{ConversationId, Seq, UserId};
use parley_core::model::MemberWindow;
use parley_store::Store;

/// Most conversations whose members are cached; past it the cache starts over.
const MEMBER_CACHE_MAX: usize = 100_000;
/// Entries committed elsewhere that are read to check a cached member list, at most; past it the
/// list is simply reloaded.
const GAP_CHECK_MAX: i64 = 64;

/// The member windows of one conversation.
pub(crate) struct Members {
    windows: Vec<MemberWindow>,
    /// The highest seq up to which these windows are known to be exact: every membership change
    /// at or below it is in them. Fanout moves it along with the entries it routes.
    upto: AtomicI64,
}

impl Members {
    fn new(windows: Vec<MemberWindow>, upto: i64) -> Self {
        // A list loaded from storage holds every change committed before the load, so at least
        // everything up to its latest boundary.
        let boundary = windows.iter().map(|w| w.left_seq.unwrap_or(w.joined_seq)).max().unwrap_or(Seq(0));
        Members { windows, upto: AtomicI64::new(upto.max(boundary.0)) }
    }

    /// Who may see `seq`.
    pub(crate) fn recipients(&self, seq: Seq) -> Vec<UserId> {
        self.windows.iter().filter(|w| w.sees(seq)).map(|w| w.user_id).collect()
    }

    /// The members now (who have not left).
    pub(crate) fn current(&self) -> impl Iterator<Item = UserId> + '_ {
        self.windows.iter().filter(|w| w.left_seq.is_none()).map(|w| w.user_id)
    }

    /// `user`'s membership window, if they ever were a member.
    pub(crate) fn window(&self, user: UserId) -> Option<MemberWindow> {
        self.windows.iter().find(|w| w.user_id == user).copied()
    }

    /// Whether `user` is a member now.
    pub(crate) fn is_current(&self, user: UserId) -> bool {
        self.window(user).is_some_and(|w| w.left_seq.is_none())
    }
}

/// Member windows per conversation, loaded from the store it was built with.
pub(crate) struct MemberCache {
    store: Arc<dyn Store>,
    map: Mutex<HashMap<ConversationId, Arc<Members>>>,
}

impl MemberCache {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        MemberCache { store, map: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationId, Arc<Members>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `conv`'s members, from the cache or else from storage; `None` if storage failed.
    pub(crate) async fn get(&self, conv: ConversationId) -> Option<Arc<Members>> {
        if let Some(m) = self.lock().get(&conv) {
            return Some(m.clone());
        }
        self.load(conv, 0).await
    }

    /// `user`'s window in `conv`, if they ever were a member (and the members could be read).
    pub(crate) async fn window(&self, conv: ConversationId, user: UserId) -> Option<MemberWindow> {
        self.get(conv).await.and_then(|m| m.window(user))
    }

    /// Loads `conv`'s members from storage (exact for every seq committed so far, `at` included).
    async fn load(&self, conv: ConversationId, at: i64) -> Option<Arc<Members>> {
        let members = match self.store.member_windows(conv).await {
            Ok(windows) => Arc::new(Members::new(windows, at)),
            Err(e) => {
                tracing::error!(error = %e, conv = %conv, "cannot load members for fanout");
                return None;
            }
        };
        let mut map = self.lock();
        if map.len() >= MEMBER_CACHE_MAX {
            map.clear();
        }
        map.insert(conv, members.clone());
        Some(members)
    }

    /// The members exactly as of committed entry `seq`, in a cluster, where other nodes commit
    /// to the same conversation. If entries this node did not route lie between what the cached
    /// list is known to cover and `seq`, they are read from the log (or, past a few, the list is
    /// reloaded): a membership change among them means a reload. The broadcast invalidation
    /// usually gets here first; this closes the race with it.
    pub(crate) async fn for_seq(&self, conv: ConversationId, seq: Seq) -> Option<Arc<Members>> {
        let cached = self.lock().get(&conv).cloned();
        let Some(m) = cached else { return self.load(conv, seq.0).await };
        let upto = m.upto.load(Ordering::Acquire);
        if upto >= (seq - 1).0 {
            m.upto.fetch_max(seq.0, Ordering::AcqRel);
            return Some(m);
        }
        if seq - 1 - upto <= Seq(GAP_CHECK_MAX)
            && let Ok(between) = self.store.log_range(conv, Seq(upto), seq - 1, GAP_CHECK_MAX as u32).await
            && !between.iter().any(|e| e.kind.changes_members())
        {
            m.upto.fetch_max(seq.0, Ordering::AcqRel);
            return Some(m);
        }
        self.load(conv, seq.0).await
    }

    /// Forgets `conv`'s members: a membership change was committed.
    pub(crate) fn invalidate(&self, conv: ConversationId) {
        self.lock().remove(&conv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_pick_recipients() {
        let m = Members::new(
            vec![
                MemberWindow { user_id: UserId(1), joined_seq: Seq(1), left_seq: None },
                MemberWindow { user_id: UserId(2), joined_seq: Seq(1), left_seq: Some(Seq(5)) },
                MemberWindow { user_id: UserId(3), joined_seq: Seq(8), left_seq: None },
            ],
            0,
        );
        assert_eq!(m.upto.load(Ordering::Relaxed), 8, "exact up to its latest boundary");
        assert_eq!(m.recipients(Seq(5)), vec![UserId(1), UserId(2)]);
        assert_eq!(m.recipients(Seq(6)), vec![UserId(1)]);
        assert_eq!(m.recipients(Seq(8)), vec![UserId(1), UserId(3)]);
        assert_eq!(m.current().collect::<Vec<_>>(), vec![UserId(1), UserId(3)]);
        assert!(m.is_current(UserId(1)) && !m.is_current(UserId(2)) && !m.is_current(UserId(4)));
    }
}

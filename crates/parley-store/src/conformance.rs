//! The store conformance suite: every promise of the [`Store`](crate::Store) trait, checked
//! through the trait only. A backend stamps the whole list out in its own tests with
//! [`store_conformance!`](crate::store_conformance), so a new backend adds one line and must
//! pass the same suite (compiled only with the `conformance` feature).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parley_core::MessageKind;
use parley_core::ids::{ConversationId, DeviceId, MediaId, Seq, UserId};
use parley_core::media::{Media, MediaState};
use parley_core::model::{ConversationView, NewAccount, Role};
use parley_core::validate::MediaRef;
use tokio::sync::mpsc;

use crate::{EventSender, HistoryQuery, NewMessage, Store, StoreError, StoreEvent};

/// Opens a backend under test on its data (created by the backend's test code and deleted when
/// the backend is dropped); called again on the same data to test a restart.
pub trait Backend: Send + Sync + 'static {
    /// Opens the store, publishing its events to `events`.
    fn open(&self, events: EventSender) -> Pin<Box<dyn Future<Output = Arc<dyn Store>> + Send + '_>>;
}

/// A backend under test, with the events it publishes and what is needed to reopen it.
pub struct Harness {
    pub store: Arc<dyn Store>,
    pub events: mpsc::Receiver<Vec<StoreEvent>>,
    backend: Box<dyn Backend>,
}

impl Harness {
    pub async fn new(backend: impl Backend) -> Harness {
        Harness::open(Box::new(backend)).await
    }

    async fn open(backend: Box<dyn Backend>) -> Harness {
        let (tx, events) = mpsc::channel(1024);
        let store = backend.open(tx).await;
        Harness { store, events, backend }
    }

    /// Closes the store and opens it again on the same data, as a restart would.
    pub async fn reopen(self) -> Harness {
        self.store.shutdown().await;
        drop(self.store);
        Harness::open(self.backend).await
    }

    /// Every event published so far.
    pub fn drain(&mut self) -> Vec<StoreEvent> {
        let mut out = Vec::new();
        while let Ok(batch) = self.events.try_recv() {
            out.extend(batch);
        }
        out
    }
}

/// Declares every conformance test once, for the backend that `$make` (a future giving a
/// [`Backend`], e.g. a call of an `async fn`) opens. The one list of the suite's tests lives here.
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::store_conformance!(@tests $make;
            users_are_unique,
            devices_and_tokens,
            direct_conversations_are_one_per_pair,
            sends_are_gap_free_and_published_in_order,
            sends_are_idempotent_per_sender,
            strangers_cannot_send_or_read,
            history_pages,
            backlog_follows_cursors,
            pointers_only_grow_and_emit_receipts,
            receipts_count_from_pointers,
            concurrent_sends_stay_gap_free,
            everything_survives_a_reopen,
            groups_follow_membership_windows,
            groups_are_capped_at_1024,
            edits_deletes_and_reactions_follow_the_rules,
            bulk_accounts_are_all_or_nothing,
            conversation_views_agree_with_each_view,
            system_entries_are_typed_and_canonical,
            media_references_follow_sends_deletes_and_windows,
            media_sends_racing_the_collector_keep_their_media,
            key_directory_rules,
            one_time_keys_go_once_under_concurrent_claims,
            to_device_queues_in_order_once,
            device_epochs_and_encrypted_sends,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let h = $crate::conformance::Harness::new($make.await).await;
                $crate::conformance::$name(h).await;
            }
        )*
    };
}

async fn user(h: &Harness, name: &str) -> UserId {
    h.store.create_user(name, name, "hash").await.expect("create user").id
}

fn text(conv: ConversationId, sender: UserId, device: Option<DeviceId>, client_id: &str, body: &str) -> NewMessage {
    NewMessage {
        conversation_id: conv,
        sender_id: sender,
        sender_device_id: device,
        client_id: Some(client_id.to_owned()),
        kind: MessageKind::Text,
        body: serde_json::json!({ "text": body }).to_string(),
        target_seq: None,
        media: Vec::new(),
        device_epoch: None,
    }
}

/// Two users, a direct conversation (seq 1 is `conversation_created`) and a device of `a`.
async fn pair(h: &Harness) -> (UserId, UserId, ConversationId, DeviceId) {
    let a = user(h, "alice").await;
    let b = user(h, "bob").await;
    let (conv, created) = h.store.create_direct(a, b, false).await.unwrap();
    assert!(created);
    let dev = h.store.create_device(a, "phone", [1; 32]).await.unwrap().id;
    (a, b, conv, dev)
}

pub async fn users_are_unique(h: Harness) {
    let u = h.store.create_user("carol", "Carol", "h1").await.unwrap();
    assert_eq!(
        h.store.create_user("carol", "Other", "h2").await,
        Err(StoreError::Conflict("username is taken".into()))
    );
    assert_eq!(h.store.user(u.id).await.unwrap().unwrap().display_name, "Carol");
    let creds = h.store.user_credentials("carol").await.unwrap().unwrap();
    assert_eq!(creds.password_hash, "h1");
    assert!(h.store.user_by_username("nobody").await.unwrap().is_none());
}

pub async fn devices_and_tokens(h: Harness) {
    let a = user(&h, "alice").await;
    let b = user(&h, "bob").await;
    let d1 = h.store.create_device(a, "laptop", [7; 32]).await.unwrap();
    let d2 = h.store.create_device(a, "phone", [8; 32]).await.unwrap();
    assert_eq!(h.store.device_by_token([7; 32]).await.unwrap().unwrap().id, d1.id);
    assert!(h.store.device_by_token([9; 32]).await.unwrap().is_none());
    assert_eq!(h.store.devices(a).await.unwrap().len(), 2);
    assert!(!h.store.delete_device(b, d1.id).await.unwrap(), "only the owner deletes a device");
    assert!(h.store.delete_device(a, d1.id).await.unwrap());
    assert!(h.store.device_by_token([7; 32]).await.unwrap().is_none());
    h.store.touch_device(d2.id, d2.last_active_at + 5_000).await.unwrap();
    assert_eq!(h.store.devices(a).await.unwrap()[0].last_active_at, d2.last_active_at + 5_000);
}

pub async fn direct_conversations_are_one_per_pair(h: Harness) {
    let a = user(&h, "alice").await;
    let b = user(&h, "bob").await;
    let (c1, created) = h.store.create_direct(a, b, false).await.unwrap();
    assert!(created);
    assert_eq!(h.store.create_direct(b, a, false).await.unwrap(), (c1, false));
    let (own, _) = h.store.create_direct(a, a, false).await.unwrap();
    assert_ne!(own, c1);
    assert_eq!(h.store.member_windows(own).await.unwrap().iter().map(|w| w.user_id).collect::<Vec<_>>(), vec![a]);
    assert_eq!(h.store.create_direct(a, UserId(424242), false).await, Err(StoreError::NotFound));
    let view = h.store.conversation(b, c1, true).await.unwrap().unwrap();
    assert_eq!((view.last_seq.0, view.members_count, view.members.unwrap().len()), (1, 2, 2));
    assert_eq!(h.store.conversations(a).await.unwrap().len(), 2);
}

pub async fn sends_are_gap_free_and_published_in_order(mut h: Harness) {
    let (a, _b, conv, dev) = pair(&h).await;
    h.drain();
    for i in 0..5 {
        let out = h.store.send(text(conv, a, Some(dev), &format!("c{i}"), "hi")).await.unwrap();
        assert!(!out.duplicate);
        assert_eq!(out.message.seq, Seq(2 + i));
    }
    let seqs: Vec<i64> = h
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            StoreEvent::Message(m) => Some(m.seq.0),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![2, 3, 4, 5, 6]);
}

pub async fn sends_are_idempotent_per_sender(mut h: Harness) {
    let (a, b, conv, dev) = pair(&h).await;
    let first = h.store.send(text(conv, a, Some(dev), "same", "one")).await.unwrap().message;
    h.drain();
    // A repeat naming another body, or another conversation, still returns the original.
    let (other, _) = h.store.create_direct(a, a, false).await.unwrap();
    for repeat in [text(conv, a, None, "same", "two"), text(other, a, None, "same", "three")] {
        let out = h.store.send(repeat).await.unwrap();
        assert!(out.duplicate);
        assert_eq!(out.message, first);
    }
    assert!(
        h.drain().iter().all(|e| !matches!(e, StoreEvent::Message(m) if m.conversation_id == conv)),
        "a repeat publishes nothing"
    );
    // The same client_id from another sender is another message.
    let theirs = h.store.send(text(conv, b, None, "same", "bob's")).await.unwrap();
    assert!(!theirs.duplicate);
    assert_eq!(theirs.message.seq, first.seq + 1);
}

pub async fn strangers_cannot_send_or_read(h: Harness) {
    let (_a, _b, conv, _) = pair(&h).await;
    let eve = user(&h, "eve").await;
    assert_eq!(h.store.send(text(conv, eve, None, "x", "hi")).await.unwrap_err(), StoreError::NotMember);
    assert_eq!(h.store.ack(DeviceId(1), eve, conv, Seq(1)).await, Err(StoreError::NotMember));
    assert_eq!(h.store.read(eve, conv, Seq(1)).await, Err(StoreError::NotMember));
    assert!(h.store.conversation(eve, conv, false).await.unwrap().is_none());
    let q = HistoryQuery { limit: 10, ..Default::default() };
    assert_eq!(h.store.history(eve, conv, q).await.unwrap_err(), StoreError::NotFound);
    assert_eq!(h.store.receipts(eve, conv, Seq(1)).await.unwrap_err(), StoreError::NotFound);
}

pub async fn history_pages(h: Harness) {
    let (a, _b, conv, dev) = pair(&h).await;
    for i in 0..20 {
        h.store.send(text(conv, a, Some(dev), &format!("c{i}"), "x")).await.unwrap();
    }
    // Log: seq 1 (created) .. 21.
    let page = |after, before, limit| {
        let store = h.store.clone();
        async move {
            let q = HistoryQuery { after_seq: after, before_seq: before, limit };
            store.history(a, conv, q).await.unwrap().iter().map(|m| m.seq.0).collect::<Vec<_>>()
        }
    };
    assert_eq!(page(None, None, 5).await, vec![17, 18, 19, 20, 21]);
    assert_eq!(page(None, Some(Seq(10)), 3).await, vec![7, 8, 9]);
    assert_eq!(page(Some(Seq(10)), None, 3).await, vec![11, 12, 13]);
    assert_eq!(page(Some(Seq(10)), Some(Seq(13)), 50).await, vec![11, 12]);
    assert_eq!(page(Some(Seq(21)), None, 5).await, Vec::<i64>::new());
    assert_eq!(page(None, None, 50).await.len(), 21);
}

pub async fn backlog_follows_cursors(h: Harness) {
    let (a, b, conv, dev) = pair(&h).await;
    let bdev = h.store.create_device(b, "tablet", [2; 32]).await.unwrap().id;
    for i in 0..3 {
        h.store.send(text(conv, a, Some(dev), &format!("c{i}"), "x")).await.unwrap();
    }
    let bl = h.store.backlog(bdev, b).await.unwrap();
    assert_eq!(bl.len(), 1);
    assert_eq!((bl[0].after_seq.0, bl[0].upto_seq.0), (0, 4));
    h.store.ack(bdev, b, conv, Seq(2)).await.unwrap();
    let bl = h.store.backlog(bdev, b).await.unwrap();
    assert_eq!((bl[0].after_seq.0, bl[0].upto_seq.0), (2, 4));
    let range: Vec<i64> = h.store.log_range(conv, Seq(2), Seq(4), 100).await.unwrap().iter().map(|m| m.seq.0).collect();
    assert_eq!(range, vec![3, 4]);
    h.store.ack(bdev, b, conv, Seq(4)).await.unwrap();
    let bl = h.store.backlog(bdev, b).await.unwrap();
    assert_eq!((bl[0].after_seq.0, bl[0].upto_seq.0), (4, 4), "up to date, and still listed");
    // Cursors are per device: another device of b still has everything.
    let other = h.store.create_device(b, "laptop", [3; 32]).await.unwrap().id;
    assert_eq!(h.store.backlog(other, b).await.unwrap()[0].after_seq, Seq::ZERO);
    // Acking past the end is refused.
    assert!(matches!(h.store.ack(bdev, b, conv, Seq(99)).await, Err(StoreError::Invalid(_))));
}

pub async fn pointers_only_grow_and_emit_receipts(mut h: Harness) {
    let (a, b, conv, dev) = pair(&h).await;
    for i in 0..4 {
        h.store.send(text(conv, a, Some(dev), &format!("c{i}"), "x")).await.unwrap();
    }
    let bdev = h.store.create_device(b, "tablet", [2; 32]).await.unwrap().id;
    h.drain();
    h.store.ack(bdev, b, conv, Seq(3)).await.unwrap();
    h.store.ack(bdev, b, conv, Seq(2)).await.unwrap();
    h.store.read(b, conv, Seq(4)).await.unwrap();
    let view = h.store.conversation(b, conv, false).await.unwrap().unwrap();
    assert_eq!((view.delivered_seq.0, view.read_seq.0, view.unread_count), (4, 4, 1), "seq 5 is still unread");
    h.store.read(b, conv, Seq(5)).await.unwrap();
    h.store.read(b, conv, Seq(1)).await.unwrap();
    let view = h.store.conversation(b, conv, false).await.unwrap().unwrap();
    assert_eq!((view.delivered_seq.0, view.read_seq.0, view.unread_count), (5, 5, 0));
    let receipts: Vec<(i64, i64)> = h
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            StoreEvent::Receipt(r) if r.user_id == b => Some((r.delivered_seq.0, r.read_seq.0)),
            _ => None,
        })
        .collect();
    assert!(!receipts.is_empty());
    assert_eq!(*receipts.last().unwrap(), (5, 5));
    assert!(receipts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1), "pointers only grow: {receipts:?}");
}

pub async fn receipts_count_from_pointers(h: Harness) {
    let (a, b, conv, dev) = pair(&h).await;
    let m = h.store.send(text(conv, a, Some(dev), "c", "x")).await.unwrap().message;
    let r = h.store.receipts(b, conv, m.seq).await.unwrap();
    // The author counts as having delivered and read their own message.
    assert_eq!((r.members_count, r.delivered_count, r.read_count), (2, 1, 1));
    h.store.ack(DeviceId(9), b, conv, m.seq).await.unwrap();
    let r = h.store.receipts(a, conv, m.seq).await.unwrap();
    assert_eq!((r.delivered_count, r.read_count), (2, 1));
    h.store.read(b, conv, m.seq).await.unwrap();
    let r = h.store.receipts(a, conv, m.seq).await.unwrap();
    assert_eq!((r.delivered_count, r.read_count), (2, 2));
    assert_eq!(r.members.unwrap().len(), 2);
    assert_eq!(h.store.receipts(a, conv, Seq(999)).await.unwrap_err(), StoreError::NotFound);
}

pub async fn concurrent_sends_stay_gap_free(h: Harness) {
    let (a, b, conv, dev) = pair(&h).await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = h.store.clone();
        let sender = if t % 2 == 0 { a } else { b };
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..50 {
                let m = store.send(text(conv, sender, Some(dev), &format!("t{t}-{i}"), "x")).await.unwrap();
                seqs.push(m.message.seq.0);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (2..=401).collect::<Vec<i64>>());
}

pub async fn everything_survives_a_reopen(h: Harness) {
    let (a, b, conv, dev) = pair(&h).await;
    let sent = h.store.send(text(conv, a, Some(dev), "keep", "durable")).await.unwrap().message;
    h.store.ack(DeviceId(5), b, conv, sent.seq).await.unwrap();
    let h = h.reopen().await;
    let again = h.store.send(text(conv, a, Some(dev), "keep", "durable")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message, sent);
    let next = h.store.send(text(conv, a, Some(dev), "new", "after")).await.unwrap().message;
    assert_eq!(next.seq, sent.seq + 1);
    assert!(next.message_id > sent.message_id, "ids keep growing across restarts");
    assert_eq!(h.store.backlog(DeviceId(5), b).await.unwrap()[0].after_seq, sent.seq);
}

fn entry(
    conv: ConversationId,
    sender: UserId,
    client_id: &str,
    kind: MessageKind,
    target: i64,
    body: serde_json::Value,
) -> NewMessage {
    NewMessage {
        conversation_id: conv,
        sender_id: sender,
        sender_device_id: None,
        client_id: Some(client_id.to_owned()),
        kind,
        body: body.to_string(),
        target_seq: Some(Seq(target)),
        media: Vec::new(),
        device_epoch: None,
    }
}

async fn kinds(h: &Harness, user: UserId, conv: ConversationId) -> Vec<(i64, MessageKind)> {
    let q = HistoryQuery { limit: 200, ..Default::default() };
    h.store.history(user, conv, q).await.unwrap().iter().map(|m| (m.seq.0, m.kind)).collect()
}

pub async fn groups_follow_membership_windows(h: Harness) {
    let (a, b, c, d) = (user(&h, "ann").await, user(&h, "ben").await, user(&h, "cat").await, user(&h, "dan").await);
    let g = h.store.create_group(a, "team", &[b, b, a], false).await.unwrap();
    let view = h.store.conversation(b, g, true).await.unwrap().unwrap();
    assert_eq!((view.members_count, view.title.as_deref()), (2, Some("team")));
    let roles: Vec<(UserId, Role)> = view.members.unwrap().iter().map(|m| (m.user_id, m.role)).collect();
    assert_eq!(roles, vec![(a, Role::Admin), (b, Role::Member)]);
    // Only admins manage; strangers see nothing.
    assert!(matches!(h.store.add_members(b, g, &[c]).await, Err(StoreError::Forbidden(_))));
    assert!(matches!(h.store.set_title(b, g, "x").await, Err(StoreError::Forbidden(_))));
    assert_eq!(h.store.add_members(d, g, &[c]).await, Err(StoreError::NotFound));
    assert!(matches!(h.store.add_members(a, g, &[UserId(424242)]).await, Err(StoreError::Invalid(_))));
    h.store.send(text(g, b, None, "b1", "before c")).await.unwrap(); // seq 2
    h.store.add_members(a, g, &[c, b]).await.unwrap(); // seq 3: only c is new
    h.store.send(text(g, a, None, "a1", "hi c")).await.unwrap(); // seq 4
    assert_eq!(kinds(&h, c, g).await, vec![(3, MessageKind::MembersAdded), (4, MessageKind::Text)]);
    h.store.remove_member(a, g, c).await.unwrap(); // seq 5
    h.store.send(text(g, a, None, "a2", "c is gone")).await.unwrap(); // seq 6
    // c keeps receiving up to the removal entry, and no longer reads or sends.
    let bl = h.store.backlog(DeviceId(99), c).await.unwrap();
    assert_eq!((bl[0].after_seq.0, bl[0].upto_seq.0), (2, 5));
    let q = HistoryQuery { limit: 10, ..Default::default() };
    assert_eq!(h.store.history(c, g, q).await.unwrap_err(), StoreError::NotFound);
    assert_eq!(h.store.send(text(g, c, None, "c1", "let me in")).await.unwrap_err(), StoreError::NotMember);
    let windows = h.store.member_windows(g).await.unwrap();
    let wc = windows.iter().find(|w| w.user_id == c).unwrap();
    assert_eq!((wc.joined_seq.0, wc.left_seq.map(i64::from)), (3, Some(5)));
    // Re-added later, c sees from the new join only.
    h.store.add_members(a, g, &[c]).await.unwrap(); // seq 7
    assert_eq!(kinds(&h, c, g).await, vec![(7, MessageKind::MembersAdded)]);
    // The last admin leaving promotes the longest-standing member (b, who joined at seq 1).
    h.store.remove_member(a, g, a).await.unwrap(); // seq 8 member_left, seq 9 role_changed
    let view = h.store.conversation(b, g, true).await.unwrap().unwrap();
    let admins: Vec<UserId> =
        view.members.unwrap().iter().filter(|m| m.role == Role::Admin).map(|m| m.user_id).collect();
    assert_eq!(admins, vec![b]);
    let tail: Vec<MessageKind> = kinds(&h, b, g).await.iter().rev().take(2).map(|k| k.1).collect();
    assert_eq!(tail, vec![MessageKind::RoleChanged, MessageKind::MemberLeft]);
    assert!(matches!(h.store.set_role(b, g, b, Role::Member).await, Err(StoreError::Invalid(_))), "one admin stays");
    h.store.set_role(b, g, c, Role::Admin).await.unwrap();
    h.store.set_role(b, g, b, Role::Member).await.unwrap();
    assert!(matches!(h.store.remove_member(b, g, c).await, Err(StoreError::Forbidden(_))));
}

pub async fn groups_are_capped_at_1024(h: Harness) {
    let admin = user(&h, "admin").await;
    let accounts: Vec<NewAccount> = (0..1024)
        .map(|i| NewAccount {
            username: format!("m{i}"),
            display_name: format!("m{i}"),
            password_hash: "h".into(),
            device_name: "d".into(),
            token_hash: {
                let mut t = [7u8; 32];
                t[..4].copy_from_slice(&(i as u32).to_le_bytes());
                t
            },
        })
        .collect();
    let ids: Vec<UserId> = h.store.create_accounts(accounts).await.unwrap().iter().map(|(u, _)| u.id).collect();
    assert!(
        matches!(h.store.create_group(admin, "big", &ids, false).await, Err(StoreError::Invalid(_))),
        "1,025 in all"
    );
    let g = h.store.create_group(admin, "big", &ids[..1023], false).await.unwrap();
    assert_eq!(h.store.conversation(admin, g, false).await.unwrap().unwrap().members_count, 1024);
    let before = h.store.conversation(admin, g, false).await.unwrap().unwrap().last_seq;
    assert!(matches!(h.store.add_members(admin, g, &ids[1023..]).await, Err(StoreError::Invalid(_))));
    assert_eq!(h.store.conversation(admin, g, false).await.unwrap().unwrap().last_seq, before, "nothing changed");
    let r = h.store.receipts(admin, g, Seq(1)).await.unwrap();
    assert_eq!((r.members_count, r.members.is_none()), (1024, true));
}

pub async fn edits_deletes_and_reactions_follow_the_rules(h: Harness) {
    let (a, b, c) = (user(&h, "ann").await, user(&h, "ben").await, user(&h, "cat").await);
    let g = h.store.create_group(a, "team", &[b, c], false).await.unwrap();
    let m = h.store.send(text(g, b, None, "b1", "helo")).await.unwrap().message; // seq 2
    let edit = |s: UserId, cid: &str, t: i64| {
        entry(g, s, cid, MessageKind::Edit, t, serde_json::json!({"target_seq": t, "text": "hello"}))
    };
    let del =
        |s: UserId, cid: &str, t: i64| entry(g, s, cid, MessageKind::Delete, t, serde_json::json!({"target_seq": t}));
    let react = |s: UserId, cid: &str, t: i64| {
        entry(g, s, cid, MessageKind::Reaction, t, serde_json::json!({"target_seq": t, "emoji": "+1"}))
    };
    assert!(matches!(h.store.send(edit(c, "c1", m.seq.0)).await, Err(StoreError::Forbidden(_))));
    assert_eq!(
        h.store.send(edit(b, "b2", 1)).await.unwrap_err(),
        StoreError::NotFound,
        "system entries are not content"
    );
    assert_eq!(h.store.send(react(c, "c2", 99)).await.unwrap_err(), StoreError::NotFound);
    h.store.send(edit(b, "b3", m.seq.0)).await.unwrap();
    h.store.send(react(c, "c3", m.seq.0)).await.unwrap();
    let last = h.store.conversation(a, g, false).await.unwrap().unwrap().last_message.unwrap();
    assert_eq!(last.seq, m.seq);
    assert!(last.body.contains("hello") && last.body.contains("edited"), "{}", last.body);
    assert!(matches!(h.store.send(del(c, "c4", m.seq.0)).await, Err(StoreError::Forbidden(_))));
    h.store.send(del(a, "a1", m.seq.0)).await.unwrap(); // a group admin may delete
    assert_eq!(h.store.send(edit(b, "b4", m.seq.0)).await.unwrap_err(), StoreError::NotFound, "deleted");
    assert!(h.store.conversation(a, g, false).await.unwrap().unwrap().last_message.is_none());
}

pub async fn bulk_accounts_are_all_or_nothing(h: Harness) {
    user(&h, "taken").await;
    let acct = |name: &str, t: u8| NewAccount {
        username: name.into(),
        display_name: name.into(),
        password_hash: "h".into(),
        device_name: "d".into(),
        token_hash: [t; 32],
    };
    let r = h.store.create_accounts(vec![acct("fresh", 1), acct("taken", 2)]).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))));
    assert!(h.store.user_by_username("fresh").await.unwrap().is_none());
    let made = h.store.create_accounts(vec![acct("fresh", 1), acct("fresh2", 2)]).await.unwrap();
    assert_eq!(h.store.device_by_token([2; 32]).await.unwrap().unwrap().id, made[1].1.id);
}

/// `conversation_views` reads what `conversation` would, for each member asked about, in the
/// order asked, leaving out those who are not (or no longer) members.
pub async fn conversation_views_agree_with_each_view(h: Harness) {
    let (a, b, c, d, e) = (
        user(&h, "ann").await,
        user(&h, "ben").await,
        user(&h, "cat").await,
        user(&h, "dan").await,
        user(&h, "eve").await,
    );
    let g = h.store.create_group(a, "team", &[b, c], false).await.unwrap();
    h.store.send(text(g, a, None, "a1", "one")).await.unwrap(); // seq 2
    let m = h.store.send(text(g, b, None, "b1", "two")).await.unwrap().message; // seq 3
    h.store.read(c, g, Seq(2)).await.unwrap();
    h.store.add_members(a, g, &[d]).await.unwrap(); // seq 4: d sees no content yet
    h.store.remove_member(a, g, c).await.unwrap(); // seq 5
    h.store
        .send(entry(g, b, "b2", MessageKind::Edit, m.seq.0, serde_json::json!({"target_seq": m.seq.0, "text": "2"})))
        .await
        .unwrap();
    let asked = [d, e, b, c, a, UserId(424242)];
    for with_members in [false, true] {
        let views = h.store.conversation_views(g, &asked, with_members).await.unwrap();
        let users: Vec<UserId> = views.iter().map(|(u, _)| *u).collect();
        assert_eq!(users, vec![d, b, a], "members only, in the order asked");
        for (u, v) in views {
            let one = h.store.conversation(u, g, with_members).await.unwrap().unwrap();
            assert_eq!(format!("{v:?}"), format!("{one:?}"), "user {u}");
        }
    }
    let v = h.store.conversation_views(g, &[a, d], false).await.unwrap();
    assert_eq!(v[0].1.last_message.as_ref().map(|m| m.seq), Some(m.seq), "with its edit");
    assert!(v[1].1.last_message.is_none(), "d joined after it");
    assert!(h.store.conversation_views(g, &[c, e], true).await.unwrap().is_empty());
}

/// System entries carry their typed body, on the event and when read back, and are stored in
/// the one canonical encoding.
pub async fn system_entries_are_typed_and_canonical(mut h: Harness) {
    use parley_core::system::{Created, SystemEntry};
    let (a, b, c) = (user(&h, "ann").await, user(&h, "ben").await, user(&h, "cat").await);
    let g = h.store.create_group(a, "t\"1", &[b], false).await.unwrap();
    h.store.set_title(a, g, "t2").await.unwrap();
    h.store.add_members(a, g, &[c]).await.unwrap();
    h.store.set_role(a, g, c, Role::Admin).await.unwrap();
    h.store.remove_member(c, g, b).await.unwrap();
    h.store.remove_member(a, g, a).await.unwrap();
    let expected = vec![
        SystemEntry::ConversationCreated(Created::Group { title: "t\"1".into(), user_ids: vec![a, b] }),
        SystemEntry::TitleChanged { title: "t2".into(), by: a },
        SystemEntry::MembersAdded { user_ids: vec![c], by: a },
        SystemEntry::RoleChanged { user_id: c, role: Role::Admin, by: a },
        SystemEntry::MemberRemoved { user_id: b, by: c },
        SystemEntry::MemberLeft { user_id: a },
    ];
    let published: Vec<_> = h
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            StoreEvent::Message(m) if m.conversation_id == g => Some(m),
            _ => None,
        })
        .collect();
    let stored = h.store.log_range(g, Seq::ZERO, Seq(100), 100).await.unwrap();
    assert_eq!(published, stored, "what was published is what is read back");
    for (m, want) in stored.iter().zip(&expected) {
        assert_eq!(m.system.as_ref(), Some(want));
        assert_eq!((m.kind, m.body.as_str()), (want.kind(), want.encode().as_str()));
    }
    assert_eq!(stored.len(), expected.len());
    let (_, _, conv, _) = pair(&h).await;
    let first = &h.store.log_range(conv, Seq::ZERO, Seq(1), 1).await.unwrap()[0];
    assert_eq!(first.system, Some(SystemEntry::ConversationCreated(Created::Direct)));
    assert_eq!(first.body, r#"{"kind":"direct"}"#);
    let sent = h.store.send(text(conv, first.sender_id, None, "x", "hi")).await.unwrap().message;
    assert_eq!(sent.system, None);
}

fn media_message(conv: ConversationId, sender: UserId, client_id: &str, m: &Media) -> NewMessage {
    let body = serde_json::json!({"media_id": m.id.to_string(), "content_type": m.content_type, "size": m.size});
    NewMessage {
        conversation_id: conv,
        sender_id: sender,
        sender_device_id: None,
        client_id: Some(client_id.into()),
        kind: MessageKind::Media,
        body: body.to_string(),
        target_seq: None,
        media: vec![MediaRef { id: m.id, claimed: Some((m.content_type.clone(), m.size)) }],
        device_epoch: None,
    }
}

async fn ready_media(h: &Harness, uploader: UserId, size: u64) -> Media {
    let m = h.store.create_media(uploader, size, "image/png", [7; 32]).await.unwrap();
    assert!(h.store.media_ready(m.id).await.unwrap());
    m
}

pub async fn media_references_follow_sends_deletes_and_windows(h: Harness) {
    let (a, b, c) = (user(&h, "ann").await, user(&h, "ben").await, user(&h, "cat").await);
    let g = h.store.create_group(a, "pics", &[b], false).await.unwrap();
    let m = h.store.create_media(a, 10, "image/png", [1; 32]).await.unwrap();
    assert_eq!(m.state, MediaState::Pending);
    assert_eq!(h.store.media(m.id).await.unwrap().unwrap(), m);
    let usage = h.store.media_usage(a, 0).await.unwrap();
    assert_eq!((usage.uploads, usage.bytes, usage.oldest), (1, 10, Some(m.created_at)));
    // Pending: no message may show it.
    let err = h.store.send(media_message(g, a, "m0", &m)).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(h.store.media_ready(m.id).await.unwrap());
    assert!(!h.store.media_ready(m.id).await.unwrap(), "only a pending upload becomes ready");
    // Someone else's upload, or one described wrongly, is refused like a missing one.
    assert!(matches!(h.store.send(media_message(g, b, "b0", &m)).await, Err(StoreError::Invalid(_))));
    let mut wrong = m.clone();
    wrong.size = 11;
    assert!(matches!(h.store.send(media_message(g, a, "m1", &wrong)).await, Err(StoreError::Invalid(_))));
    assert!(!h.store.media_visible(b, m.id).await.unwrap(), "nothing references it yet");
    assert!(h.store.media_visible(a, m.id).await.unwrap(), "the uploader sees it");
    let sent = h.store.send(media_message(g, a, "m2", &m)).await.unwrap().message;
    assert!(h.store.media_visible(b, m.id).await.unwrap());
    assert!(!h.store.media_visible(c, m.id).await.unwrap(), "a stranger");
    // Referenced: neither the uploader nor the collector removes it.
    assert!(matches!(h.store.doom_upload(a, m.id).await, Err(StoreError::Conflict(_))));
    assert!(!h.store.doom_upload(b, m.id).await.unwrap(), "not b's upload");
    assert!(h.store.doom_media(parley_core::now_ms() + 1000, 100).await.unwrap().is_empty());
    // Windows: c joins after it was sent and does not see it; b leaves and keeps what came before.
    h.store.add_members(a, g, &[c]).await.unwrap();
    assert!(!h.store.media_visible(c, m.id).await.unwrap());
    h.store.remove_member(a, g, b).await.unwrap();
    let later = ready_media(&h, a, 5).await;
    h.store.send(media_message(g, a, "m3", &later)).await.unwrap();
    assert!(h.store.media_visible(b, m.id).await.unwrap());
    assert!(!h.store.media_visible(b, later.id).await.unwrap());
    assert!(h.store.media_visible(c, later.id).await.unwrap());
    // Deleting the only message that shows it makes it collectable at once, not after 24 h.
    let mut del = text(g, a, None, "d1", "");
    del.kind = MessageKind::Delete;
    del.body = serde_json::json!({"target_seq": sent.seq.0}).to_string();
    del.target_seq = Some(sent.seq);
    h.store.send(del).await.unwrap();
    let doomed = h.store.doom_media(0, 100).await.unwrap();
    assert_eq!(doomed, vec![m.id]);
    assert_eq!(h.store.media(m.id).await.unwrap().unwrap().state, MediaState::Doomed);
    // A doomed upload cannot be referenced again.
    assert!(matches!(h.store.send(media_message(g, a, "m4", &m)).await, Err(StoreError::Invalid(_))));
    h.store.forget_media(&doomed).await.unwrap();
    // A tombstone: gone for every purpose but the uploader's daily budget, until purged.
    assert_eq!(h.store.media(m.id).await.unwrap().unwrap().state, MediaState::Doomed);
    assert!(!h.store.media_visible(a, m.id).await.unwrap());
    assert!(!h.store.doom_upload(a, m.id).await.unwrap());
    assert_eq!(h.store.media_usage(a, 0).await.unwrap().uploads, 2);
    assert!(h.store.doom_media(0, 100).await.unwrap().is_empty());
    assert!(h.store.media_tombstones(m.created_at, 100).await.unwrap().is_empty(), "not older than the cutoff");
    assert_eq!(h.store.media_tombstones(m.created_at + 1, 100).await.unwrap(), vec![m.id]);
    h.store.purge_media(&[m.id]).await.unwrap();
    assert_eq!(h.store.media(m.id).await.unwrap(), None);
    assert_eq!(h.store.media_usage(a, 0).await.unwrap().uploads, 1);
    // Orphans go once they are older than the cutoff; an uploader may discard theirs.
    let orphan = h.store.create_media(c, 3, "text/plain", [2; 32]).await.unwrap();
    assert!(h.store.doom_media(orphan.created_at, 100).await.unwrap().is_empty());
    assert_eq!(h.store.doom_media(orphan.created_at + 1, 100).await.unwrap(), vec![orphan.id]);
    let mine = h.store.create_media(c, 3, "text/plain", [3; 32]).await.unwrap();
    assert!(h.store.doom_upload(c, mine.id).await.unwrap());
    let mut left = h.store.doom_media(0, 100).await.unwrap();
    left.sort();
    assert_eq!(left, vec![orphan.id, mine.id]);
    h.store.forget_media(&left).await.unwrap();
    h.store.purge_media(&left).await.unwrap();
    // The referenced one survives all of it, and a reopen.
    let h = h.reopen().await;
    assert_eq!(h.store.media(later.id).await.unwrap().unwrap().state, MediaState::Ready);
    assert!(h.store.media_visible(c, later.id).await.unwrap());
}

pub async fn media_sends_racing_the_collector_keep_their_media(h: Harness) {
    let (a, b) = (user(&h, "ann").await, user(&h, "ben").await);
    let (conv, _) = h.store.create_direct(a, b, false).await.unwrap();
    let (mut kept, mut collected) = (0, 0);
    for n in 0..40 {
        let m = ready_media(&h, a, 10).await;
        // Everything unreferenced is collectable: the send and the collector race for it.
        let (store, store2) = (h.store.clone(), h.store.clone());
        let msg = media_message(conv, a, &format!("race{n}"), &m);
        let send = tokio::spawn(async move { store.send(msg).await });
        let doom = tokio::spawn(async move { store2.doom_media(parley_core::now_ms() + 60_000, 1000).await });
        let (sent, doomed) = (send.await.unwrap(), doom.await.unwrap().unwrap());
        match (sent, doomed.contains(&m.id)) {
            (Ok(_), false) => kept += 1,
            (Err(StoreError::Invalid(_)), true) => collected += 1,
            (sent, doomed) => panic!("send {sent:?} while the collector took it: {doomed}"),
        }
        h.store.forget_media(&doomed).await.unwrap();
    }
    assert_eq!(kept + collected, 40);
    // Every message that was sent still has its upload.
    let history = h.store.history(b, conv, HistoryQuery { limit: 100, ..Default::default() }).await.unwrap();
    let shown: Vec<_> = history.iter().filter(|m| m.kind == MessageKind::Media).collect();
    assert_eq!(shown.len(), kept);
    for m in shown {
        let id: MediaId =
            serde_json::from_str::<serde_json::Value>(&m.body).unwrap()["media_id"].as_str().unwrap().parse().unwrap();
        assert_eq!(h.store.media(id).await.unwrap().unwrap().state, MediaState::Ready);
    }
}

async fn device(h: &Harness, user: UserId, name: &str) -> DeviceId {
    let mut token = [0u8; 32];
    token[..name.len().min(32)].copy_from_slice(&name.as_bytes()[..name.len().min(32)]);
    token[31] = rand_byte();
    h.store.create_device(user, name, token).await.expect("create device").id
}

fn rand_byte() -> u8 {
    use std::sync::atomic::{AtomicU8, Ordering};
    static N: AtomicU8 = AtomicU8::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn upload(identity: Option<&str>, keys: &[(&str, &str)], fallback: Option<(&str, &str)>) -> crate::e2ee::KeyUpload {
    crate::e2ee::KeyUpload {
        identity: identity.map(str::to_owned),
        one_time: keys.iter().map(|(i, k)| (i.to_string(), k.to_string())).collect(),
        fallback: fallback.map(|(i, k)| (i.to_owned(), k.to_owned())),
    }
}

pub async fn key_directory_rules(mut h: Harness) {
    let (a, b, stranger) = (user(&h, "ann").await, user(&h, "ben").await, user(&h, "sam").await);
    let (da, db, ds) = (device(&h, a, "a1").await, device(&h, b, "b1").await, device(&h, stranger, "s1").await);
    h.store.create_direct(a, b, true).await.unwrap();
    h.drain();
    let v0 = h.store.device_list(a, b).await.unwrap().unwrap().list_version;
    assert_eq!(h.store.device_list(a, b).await.unwrap().unwrap().devices, vec![(db, None)]);
    assert_eq!(h.store.device_list(stranger, b).await.unwrap(), None, "a stranger learns nothing");
    assert!(h.store.device_list(b, b).await.unwrap().is_some(), "one's own list");
    // The identity, once.
    let id_b = r#"{"algorithm":"olm.v1","keys":{"curve25519":"B"}}"#;
    let n = h
        .store
        .put_keys(b, db, upload(Some(id_b), &[("k1", "\"one\""), ("k2", "\"two\"")], Some(("f", "\"fb\""))))
        .await;
    assert_eq!(n.unwrap(), 2);
    let list = h.store.device_list(a, b).await.unwrap().unwrap();
    assert_eq!(list.devices, vec![(db, Some(id_b.to_owned()))]);
    assert!(list.list_version > v0, "an identity changes the list version");
    let changed = h.drain().into_iter().any(|e| matches!(e, StoreEvent::DeviceListChanged { user, .. } if user == b));
    assert!(changed, "and is announced");
    assert!(h.store.has_identity(db).await.unwrap() && !h.store.has_identity(da).await.unwrap());
    assert_eq!(
        h.store.put_keys(b, db, upload(Some(id_b), &[("k1", "\"one\"")], None)).await.unwrap(),
        2,
        "repeats are no-ops"
    );
    assert!(matches!(h.store.put_keys(b, db, upload(Some("{}"), &[], None)).await, Err(StoreError::Conflict(_))));
    assert!(matches!(
        h.store.put_keys(b, db, upload(None, &[("k1", "\"other\"")], None)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(h.store.key_counts(db).await.unwrap(), (2, true));
    // The 500 cap.
    let many: Vec<(String, String)> = (0..499).map(|i| (format!("m{i:03}"), format!("\"{i}\""))).collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert!(matches!(h.store.put_keys(b, db, upload(None, &refs, None)).await, Err(StoreError::Invalid(_))));
    assert_eq!(h.store.key_counts(db).await.unwrap().0, 2, "a refused upload stores nothing");
    // Claims: strangers and identity-less devices are left out; keys go once, then the fallback.
    assert!(h.store.claim_keys(stranger, vec![(b, db)]).await.unwrap().is_empty());
    assert!(h.store.claim_keys(b, vec![(a, da)]).await.unwrap().is_empty(), "no identity");
    let mut got = Vec::new();
    for _ in 0..3 {
        let c = h.store.claim_keys(a, vec![(b, db), (b, db), (stranger, ds)]).await.unwrap();
        assert_eq!(c.len(), 1);
        got.push((c[0].key.clone().unwrap().0, c[0].fallback));
    }
    assert_eq!(got, vec![("k1".into(), false), ("k2".into(), false), ("f".into(), true)]);
    assert_eq!(h.store.key_counts(db).await.unwrap(), (0, false));
    let low =
        h.drain().into_iter().filter(|e| matches!(e, StoreEvent::KeysLow { device, .. } if *device == db)).count();
    assert!(low >= 1, "a claim that leaves fewer than 10 keys says so");
    // A new fallback key replaces the used one; the same again keeps its state.
    h.store.put_keys(b, db, upload(None, &[], Some(("f2", "\"fb2\"")))).await.unwrap();
    assert_eq!(h.store.key_counts(db).await.unwrap(), (0, true));
    // Revoking a device drops its keys and changes the list.
    let before = h.store.device_list(a, b).await.unwrap().unwrap().list_version;
    assert!(h.store.delete_device(b, db).await.unwrap());
    let after = h.store.device_list(a, b).await.unwrap().unwrap();
    assert!(after.list_version > before && after.devices.is_empty());
    assert_eq!(h.store.key_counts(db).await.unwrap(), (0, false));
    let mut co = h.store.co_members(a).await.unwrap();
    co.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(co, want);
}

pub async fn one_time_keys_go_once_under_concurrent_claims(h: Harness) {
    let (a, b) = (user(&h, "ann").await, user(&h, "ben").await);
    let db = device(&h, b, "b1").await;
    h.store.create_direct(a, b, true).await.unwrap();
    let keys: Vec<(String, String)> = (0..40).map(|i| (format!("k{i:02}"), format!("\"{i}\""))).collect();
    let refs: Vec<(&str, &str)> = keys.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    h.store.put_keys(b, db, upload(Some("{\"k\":1}"), &refs, Some(("fb", "\"f\"")))).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = h.store.clone();
        tasks.push(tokio::spawn(async move { store.claim_keys(a, vec![(b, db)]).await.unwrap() }));
    }
    let mut one_time = Vec::new();
    let mut fallbacks = 0;
    for t in tasks {
        let c = t.await.unwrap();
        match &c[0] {
            crate::e2ee::ClaimedKey { fallback: true, .. } => fallbacks += 1,
            k => one_time.push(k.key.clone().unwrap().0),
        }
    }
    let n = one_time.len();
    one_time.sort();
    one_time.dedup();
    assert_eq!((one_time.len(), n, fallbacks), (40, 40, 10), "each one-time key once, then the fallback");
}

pub async fn to_device_queues_in_order_once(mut h: Harness) {
    let (a, b, stranger) = (user(&h, "ann").await, user(&h, "ben").await, user(&h, "sam").await);
    let (da, db, ds) = (device(&h, a, "a1").await, device(&h, b, "b1").await, device(&h, stranger, "s1").await);
    h.store.create_direct(a, b, true).await.unwrap();
    h.drain();
    let out = |d: DeviceId, u: UserId, p: &str| crate::e2ee::ToDeviceOut { user: u, device: d, payload: p.to_owned() };
    h.store.queue_to_device(a, da, "c1".into(), vec![out(db, b, "{\"n\":1}"), out(ds, stranger, "{}")]).await.unwrap();
    h.store
        .queue_to_device(a, da, "c2".into(), vec![out(db, b, "{\"n\":2}"), out(db, a, "{\"wrong\":1}")])
        .await
        .unwrap();
    // A repeated client id queues nothing.
    h.store.queue_to_device(a, da, "c1".into(), vec![out(db, b, "{\"n\":3}")]).await.unwrap();
    let pokes: Vec<_> = h.drain().into_iter().filter(|e| matches!(e, StoreEvent::ToDevice(_))).collect();
    assert_eq!(pokes.len(), 2);
    let q = h.store.to_device_after(db, 0, 100).await.unwrap();
    let payloads: Vec<&str> = q.iter().map(|m| m.payload.as_str()).collect();
    assert_eq!(payloads, ["{\"n\":1}", "{\"n\":2}"]);
    assert!(q[0].id < q[1].id && q[0].sender_user == a && q[0].sender_device == da);
    assert!(h.store.to_device_after(ds, 0, 100).await.unwrap().is_empty(), "strangers get nothing");
    assert_eq!(h.store.to_device_after(db, q[0].id, 100).await.unwrap().len(), 1);
    // Acknowledged is gone; the rest survives a restart.
    h.store.ack_to_device(db, q[0].id).await.unwrap();
    let h = h.reopen().await;
    let left = h.store.to_device_after(db, 0, 100).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, q[1].id);
    h.store.queue_to_device(a, da, "c3".into(), vec![out(db, b, "{\"n\":4}")]).await.unwrap();
    let later = h.store.to_device_after(db, 0, 100).await.unwrap();
    assert!(later[1].id > q[1].id, "ids keep increasing after a restart");
    // The queue is bounded per device.
    let flood: Vec<_> = (0..crate::e2ee::MAX_TO_DEVICE_QUEUE).map(|_| out(db, b, "{}")).collect();
    assert!(matches!(h.store.queue_to_device(a, da, "c4".into(), flood).await, Err(StoreError::Full { .. })));
    assert_eq!(h.store.to_device_after(db, 0, 2000).await.unwrap().len(), 2, "a refused frame queues nothing");
    // A revoked device's queue goes with it.
    h.store.delete_device(b, db).await.unwrap();
    assert!(h.store.to_device_after(db, 0, 100).await.unwrap().is_empty());
}

pub async fn device_epochs_and_encrypted_sends(h: Harness) {
    let (a, b, c) = (user(&h, "ann").await, user(&h, "ben").await, user(&h, "cat").await);
    let g = h.store.create_group(a, "secret", &[b], true).await.unwrap();
    let plain = h.store.create_group(a, "open", &[b], false).await.unwrap();
    let epoch = |v: ConversationView| (v.encrypted, v.device_epoch);
    let (enc, e0) = epoch(h.store.conversation(a, g, false).await.unwrap().unwrap());
    assert!(enc);
    assert!(!h.store.conversation(a, plain, false).await.unwrap().unwrap().encrypted);
    // Plaintext kinds are refused; encrypted and delete go through.
    assert!(matches!(h.store.send(text(g, a, None, "t1", "hi")).await, Err(StoreError::Invalid(_))));
    let cipher = |cid: &str, e: Option<i64>| {
        let mut m = text(g, a, None, cid, "");
        m.kind = MessageKind::Encrypted;
        m.body = serde_json::json!({"algorithm": "megolm.v1", "ciphertext": "x"}).to_string();
        m.device_epoch = e;
        m
    };
    let sent = h.store.send(cipher("e1", Some(e0))).await.unwrap().message;
    // A new device of a member changes the epoch: the old one is stale, and nothing is stored.
    device(&h, b, "b2").await;
    let (_, e1) = epoch(h.store.conversation(a, g, false).await.unwrap().unwrap());
    assert!(e1 > e0);
    assert_eq!(h.store.send(cipher("e2", Some(e0))).await.unwrap_err(), StoreError::StaleDevices(e1));
    let retried = h.store.send(cipher("e2", Some(e1))).await.unwrap();
    assert!(!retried.duplicate && retried.message.seq > sent.seq);
    // Membership changes move it too.
    h.store.add_members(a, g, &[c]).await.unwrap();
    let (_, e2) = epoch(h.store.conversation(a, g, false).await.unwrap().unwrap());
    assert!(e2 > e1);
    h.store.remove_member(a, g, c).await.unwrap();
    let (_, e3) = epoch(h.store.conversation(a, g, false).await.unwrap().unwrap());
    assert!(e3 > e2);
    let mut del = text(g, a, None, "d1", "");
    del.kind = MessageKind::Delete;
    del.body = serde_json::json!({"target_seq": sent.seq.0}).to_string();
    del.target_seq = Some(sent.seq);
    h.store.send(del).await.unwrap();
    // The deleted message's ciphertext is gone from the store.
    let q = HistoryQuery { limit: 50, ..Default::default() };
    let wiped = h.store.history(a, g, q).await.unwrap().into_iter().find(|m| m.seq == sent.seq).unwrap();
    assert_eq!(wiped.body, crate::entry::WIPED_CIPHERTEXT);
}

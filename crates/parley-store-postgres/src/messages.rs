//! The log: sends (one at a time, or a batch's run of them at once), history, backlog, pointers
//! and receipts.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::ClientWrapper;
use parley_core::ids::*;
use parley_core::limits::RECEIPTS_LIVE_MAX_MEMBERS;
use parley_core::model::*;
use parley_core::rules::{self, Target};
use parley_core::{MessageKind, now_ms};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::writer::{Ctx, Op, Reply};
use crate::{PgResult, execute, query, query_one, query_opt};
use parley_store::{Backlog, HistoryQuery, NewMessage, Result, SendOutcome, StoreError, StoreEvent};

/// A log entry's columns, in the order [`message`] reads them.
pub(crate) const COLS: &str =
    "conversation_id, seq, message_id, sender_id, sender_device_id, client_id, ts, kind, body";

/// [`COLS`] qualified with a table alias.
pub(crate) fn cols(alias: &str) -> String {
    COLS.split(", ").map(|c| format!("{alias}.{c}")).collect::<Vec<_>>().join(", ")
}

/// Reads a message from the nine columns starting at `at`.
pub(crate) fn message(r: &Row, at: usize) -> PgResult<Message> {
    let kind: String = r.try_get(at + 7)?;
    let kind = MessageKind::parse(&kind).ok_or_else(|| StoreError::Backend(format!("unknown message kind {kind}")))?;
    let body: String = r.try_get(at + 8)?;
    Ok(Message {
        conversation_id: ConversationId(r.try_get(at)?),
        seq: Seq(r.try_get(at + 1)?),
        message_id: MessageId(r.try_get(at + 2)?),
        sender_id: UserId(r.try_get(at + 3)?),
        sender_device_id: r.try_get::<_, Option<i64>>(at + 4)?.map(DeviceId),
        client_id: r.try_get(at + 5)?,
        ts: r.try_get(at + 6)?,
        kind,
        system: system_of(kind, &body),
        body,
    })
}

fn messages(rows: &[Row]) -> PgResult<Vec<Message>> {
    rows.iter().map(|r| message(r, 0)).collect()
}

pub(crate) use parley_store::entry::Entry;
use parley_store::entry::system_of;

/// Appends one entry to a conversation's log with the next seq and publishes it.
pub(crate) async fn insert_entry(ctx: &mut Ctx<'_>, e: Entry) -> PgResult<Message> {
    let ts = now_ms();
    let seq: i64 = query_one(
        ctx.db,
        "UPDATE conversations SET last_seq = last_seq + 1, last_activity = $2 WHERE id = $1 RETURNING last_seq",
        &[&e.conv.0, &ts],
    )
    .await?
    .try_get(0)?;
    let msg = Message {
        conversation_id: e.conv,
        seq: Seq(seq),
        message_id: MessageId(ctx.ids.next()),
        sender_id: e.sender,
        sender_device_id: e.device,
        client_id: e.client_id,
        ts,
        kind: e.kind,
        body: e.body,
        system: e.system,
    };
    execute(
        ctx.db,
        &format!("INSERT INTO messages ({COLS}, target_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
        &[
            &msg.conversation_id.0,
            &msg.seq.0,
            &msg.message_id.0,
            &msg.sender_id.0,
            &msg.sender_device_id.map(i64::from),
            &msg.client_id,
            &msg.ts,
            &msg.kind.as_str(),
            &msg.body,
            &e.target_seq.map(i64::from),
        ],
    )
    .await?;
    if let Some(client_id) = &msg.client_id {
        execute(
            ctx.db,
            "INSERT INTO idempotency (sender_id, client_id, conversation_id, seq) VALUES ($1, $2, $3, $4)",
            &[&msg.sender_id.0, client_id, &msg.conversation_id.0, &msg.seq.0],
        )
        .await?;
    }
    ctx.events.push(StoreEvent::Message(msg.clone()));
    Ok(msg)
}

/// Takes the conversation row's lock for the rest of the transaction. Every write that appends
/// to a conversation or changes its members takes it first, so a node reads membership and
/// `last_seq` that no other node can change before it commits.
pub(crate) async fn lock(db: &ClientWrapper, conv: ConversationId) -> PgResult<()> {
    query_opt(db, "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", &[&conv.0]).await?;
    Ok(())
}

pub(crate) use parley_store::entry::Window;

/// `user`'s window on `conv`, current or past; `None` if they never were a member.
pub(crate) async fn window(db: &ClientWrapper, user: UserId, conv: ConversationId) -> PgResult<Option<Window>> {
    let Some(r) = query_opt(
        db,
        "SELECT m.joined_seq, m.left_seq, c.last_seq, m.role, c.kind, c.encrypted, c.device_epoch
         FROM members m JOIN conversations c ON c.id = m.conversation_id
         WHERE m.conversation_id = $1 AND m.user_id = $2",
        &[&conv.0, &user.0],
    )
    .await?
    else {
        return Ok(None);
    };
    let (role, kind): (String, String) = (r.try_get(3)?, r.try_get(4)?);
    Ok(Some(Window {
        joined: r.try_get(0)?,
        left: r.try_get(1)?,
        last: r.try_get(2)?,
        role: Role::parse(&role),
        kind: ConversationKind::parse(&kind).unwrap_or(ConversationKind::Group),
        encrypted: r.try_get(5)?,
        device_epoch: r.try_get(6)?,
    }))
}

/// `user`'s window if they are a current member.
pub(crate) async fn current(db: &ClientWrapper, user: UserId, conv: ConversationId) -> PgResult<Option<Window>> {
    Ok(window(db, user, conv).await?.filter(|w| w.left.is_none()))
}

/// The original of a repeated `(sender, client_id)`, if there is one.
async fn original(db: &ClientWrapper, sender: UserId, client_id: &str) -> PgResult<Option<Message>> {
    let sql = format!(
        "SELECT {} FROM idempotency i JOIN messages m ON m.conversation_id = i.conversation_id AND m.seq = i.seq
         WHERE i.sender_id = $1 AND i.client_id = $2",
        cols("m")
    );
    query_opt(db, &sql, &[&sender.0, &client_id]).await?.map(|r| message(&r, 0)).transpose()
}

/// One send on its own: an edit, delete or reaction (whose target is checked), or any send when
/// the batch runs job by job.
pub(crate) async fn send(ctx: &mut Ctx<'_>, m: &NewMessage) -> PgResult<SendOutcome> {
    lock(ctx.db, m.conversation_id).await?;
    if let Some(client_id) = &m.client_id
        && let Some(message) = original(ctx.db, m.sender_id, client_id).await?
    {
        return Ok(SendOutcome { message, duplicate: true });
    }
    let Some(w) = current(ctx.db, m.sender_id, m.conversation_id).await? else {
        return Err(StoreError::NotMember.into());
    };
    rules::encrypted_send(w.encrypted, w.device_epoch, m.kind, m.device_epoch)?;
    if let Some(target) = m.target_seq {
        authorize_target(ctx.db, m, &w, target.0).await?;
    }
    crate::media::take_refs(ctx.db, m.sender_id, &m.media).await?;
    let message = insert_entry(
        ctx,
        Entry {
            conv: m.conversation_id,
            sender: m.sender_id,
            device: m.sender_device_id,
            client_id: m.client_id.clone(),
            kind: m.kind,
            body: m.body.clone(),
            target_seq: m.target_seq,
            system: None,
        },
    )
    .await?;
    crate::media::record_refs(ctx.db, &message, &m.media).await?;
    if let (MessageKind::Delete, Some(target)) = (message.kind, m.target_seq) {
        crate::media::drop_refs(ctx.db, message.conversation_id, target).await?;
        execute(
            ctx.db,
            "UPDATE messages SET body = $3 WHERE conversation_id = $1 AND seq = $2 AND kind = 'encrypted'",
            &[&message.conversation_id.0, &target.0, &parley_store::entry::WIPED_CIPHERTEXT],
        )
        .await?;
    }
    let decisions = crate::push::queue(ctx.db, std::slice::from_ref(&message)).await?;
    if decisions != parley_store::PushDecisions::default() {
        ctx.events.push(StoreEvent::Pushes(decisions));
    }
    Ok(SendOutcome { message, duplicate: false })
}

/// Reads the entry an `edit`, `delete` or `reaction` refers to and applies
/// [`rules::may_target`].
async fn authorize_target(db: &ClientWrapper, m: &NewMessage, w: &Window, target: i64) -> PgResult<()> {
    let found = query_opt(
        db,
        "SELECT sender_id, kind, EXISTS (SELECT 1 FROM messages d WHERE d.conversation_id = $1
             AND d.target_seq = $2 AND d.kind = 'delete')
         FROM messages WHERE conversation_id = $1 AND seq = $2",
        &[&m.conversation_id.0, &target],
    )
    .await?;
    let found = match found {
        Some(r) => {
            let kind: String = r.try_get(1)?;
            Some(Target {
                seq: Seq(target),
                author: UserId(r.try_get(0)?),
                // An unknown kind is nothing an edit may target.
                kind: MessageKind::parse(&kind).unwrap_or(MessageKind::ConversationCreated),
                deleted: r.try_get(2)?,
            })
        }
        None => None,
    };
    Ok(rules::may_target(m.kind, m.sender_id, w.joined, w.standing(), found)?)
}

/// Whether `seq` is a position a member may move a pointer to ([`rules::pointer_move`]).
fn check_pointer(upto: Option<i64>, seq: Seq) -> Result<()> {
    Ok(rules::pointer_move(upto.map(Seq), seq)?)
}

async fn upto(db: &ClientWrapper, user: UserId, conv: ConversationId) -> PgResult<Option<i64>> {
    Ok(window(db, user, conv).await?.map(|w| w.upto()))
}

pub(crate) async fn ack(
    ctx: &mut Ctx<'_>,
    device: DeviceId,
    user: UserId,
    conv: ConversationId,
    seq: Seq,
) -> PgResult<()> {
    check_pointer(upto(ctx.db, user, conv).await?, seq)?;
    ctx.advance_cursor(device, conv, seq);
    ctx.advance_pointers(conv, user, seq, Seq::ZERO);
    Ok(())
}

pub(crate) async fn read(ctx: &mut Ctx<'_>, user: UserId, conv: ConversationId, seq: Seq) -> PgResult<()> {
    check_pointer(upto(ctx.db, user, conv).await?, seq)?;
    // Having read a message implies having it.
    ctx.advance_pointers(conv, user, seq, seq);
    Ok(())
}

/// A run of plain sends, acks, reads and activity stamps, executed together with the same
/// outcome as one at a time, in order: one pipelined round trip locks the conversations that
/// get entries (in id order, so two nodes cannot deadlock on them), finds the repeats and reads
/// every window the jobs need; the jobs are then decided here, seqs counted on from each
/// conversation's `last_seq`; one more round trip writes the counters, the entries and their
/// idempotency keys. Pushes one reply per job onto `replies`.
pub(crate) async fn segment(ctx: &mut Ctx<'_>, ops: &[Op], replies: &mut Vec<Result<Reply>>) -> PgResult<()> {
    let db = ctx.db;
    let mut lock_ids: Vec<ConversationId> = Vec::new();
    let (mut key_senders, mut key_ids): (Vec<UserId>, Vec<&str>) = (Vec::new(), Vec::new());
    let mut pairs: HashSet<(ConversationId, UserId)> = HashSet::new();
    for op in ops {
        match op {
            Op::Send(m) => {
                lock_ids.push(m.conversation_id);
                if let Some(c) = &m.client_id {
                    key_senders.push(m.sender_id);
                    key_ids.push(c);
                }
                pairs.insert((m.conversation_id, m.sender_id));
            }
            Op::Ack { user, conv, .. } | Op::Read { user, conv, .. } => {
                pairs.insert((*conv, *user));
            }
            _ => {}
        }
    }
    lock_ids.sort_unstable();
    lock_ids.dedup();
    let (pair_convs, pair_users): (Vec<ConversationId>, Vec<UserId>) = pairs.iter().copied().unzip();

    // Prepared first, so the three go out back to back, in this order: the windows are read
    // after the locks are held.
    let lock_st = db.prepare_cached("SELECT id FROM conversations WHERE id = ANY($1) ORDER BY id FOR UPDATE").await?;
    let orig_st = db
        .prepare_cached(&format!(
            "SELECT {} FROM unnest($1::int8[], $2::text[]) AS k(sender_id, client_id)
             JOIN idempotency i ON i.sender_id = k.sender_id AND i.client_id = k.client_id
             JOIN messages m ON m.conversation_id = i.conversation_id AND m.seq = i.seq",
            cols("m")
        ))
        .await?;
    let win_st = db
        .prepare_cached(
            "SELECT k.c, k.u, m.left_seq, c.last_seq, c.encrypted, c.device_epoch
             FROM unnest($1::int8[], $2::int8[]) AS k(c, u)
             JOIN members m ON m.conversation_id = k.c AND m.user_id = k.u
             JOIN conversations c ON c.id = k.c",
        )
        .await?;
    let (_, orig_rows, win_rows) = tokio::try_join!(
        async {
            if lock_ids.is_empty() { Ok(Vec::new()) } else { db.query(&lock_st, &[&crate::raw(&lock_ids)]).await }
        },
        async {
            if key_senders.is_empty() {
                Ok(Vec::new())
            } else {
                db.query(&orig_st, &[&crate::raw(&key_senders), &key_ids]).await
            }
        },
        async {
            if pair_convs.is_empty() {
                Ok(Vec::new())
            } else {
                db.query(&win_st, &[&crate::raw(&pair_convs), &crate::raw(&pair_users)]).await
            }
        },
    )?;

    let mut originals: HashMap<(UserId, String), Message> = HashMap::with_capacity(orig_rows.len());
    for r in &orig_rows {
        let m = message(r, 0)?;
        if let Some(c) = m.client_id.clone() {
            originals.insert((m.sender_id, c), m);
        }
    }
    let mut windows: HashMap<(ConversationId, UserId), Option<i64>> = HashMap::with_capacity(win_rows.len());
    let mut last: HashMap<ConversationId, i64> = HashMap::new();
    // Whether each conversation is encrypted, and its device epoch.
    let mut encryption: HashMap<ConversationId, (bool, i64)> = HashMap::new();
    for r in &win_rows {
        let conv: ConversationId = ConversationId(r.try_get(0)?);
        windows.insert((conv, UserId(r.try_get(1)?)), r.try_get(2)?);
        last.insert(conv, r.try_get(3)?);
        encryption.insert(conv, (r.try_get(4)?, r.try_get(5)?));
    }

    let mut entries: Vec<Message> = Vec::new();
    for op in ops {
        let reply = match op {
            Op::Send(m) => {
                let repeat = m.client_id.as_ref().and_then(|c| originals.get(&(m.sender_id, c.clone())));
                if let Some(message) = repeat {
                    Ok(Reply::Sent(SendOutcome { message: message.clone(), duplicate: true }))
                } else if !matches!(windows.get(&(m.conversation_id, m.sender_id)), Some(None)) {
                    Err(StoreError::NotMember)
                } else if let Err(refusal) = {
                    let (encrypted, epoch) = encryption.get(&m.conversation_id).copied().unwrap_or((false, 0));
                    rules::encrypted_send(encrypted, epoch, m.kind, m.device_epoch)
                } {
                    Err(refusal.into())
                } else {
                    let seq = last.entry(m.conversation_id).or_insert(0);
                    *seq += 1;
                    let message = Message {
                        conversation_id: m.conversation_id,
                        seq: Seq(*seq),
                        message_id: MessageId(ctx.ids.next()),
                        sender_id: m.sender_id,
                        sender_device_id: m.sender_device_id,
                        client_id: m.client_id.clone(),
                        ts: now_ms(),
                        kind: m.kind,
                        body: m.body.clone(),
                        // Bulk sends are client kinds; system entries are written one by one.
                        system: None,
                    };
                    if let Some(c) = &m.client_id {
                        originals.insert((m.sender_id, c.clone()), message.clone());
                    }
                    ctx.events.push(StoreEvent::Message(message.clone()));
                    entries.push(message.clone());
                    Ok(Reply::Sent(SendOutcome { message, duplicate: false }))
                }
            }
            Op::Ack { device, user, conv, seq } => {
                let upto = windows.get(&(*conv, *user)).map(|&left| left.unwrap_or(last[conv]));
                check_pointer(upto, *seq).map(|()| {
                    ctx.advance_cursor(*device, *conv, *seq);
                    ctx.advance_pointers(*conv, *user, *seq, Seq::ZERO);
                    Reply::Unit
                })
            }
            Op::Read { user, conv, seq } => {
                let upto = windows.get(&(*conv, *user)).map(|&left| left.unwrap_or(last[conv]));
                check_pointer(upto, *seq).map(|()| {
                    ctx.advance_pointers(*conv, *user, *seq, *seq);
                    Reply::Unit
                })
            }
            Op::TouchDevice { device, at } => {
                ctx.touch_device(*device, *at);
                Ok(Reply::Unit)
            }
            Op::SetLastSeen { user, at } => {
                ctx.set_last_seen(*user, *at);
                Ok(Reply::Unit)
            }
            other => Err(StoreError::Backend(format!("not a batched job: {}", other.name()))),
        };
        replies.push(reply);
    }
    if entries.is_empty() {
        return Ok(());
    }
    write_entries_and_pushes(ctx, &entries).await
}

/// Writes a segment's entries: each conversation's new `last_seq` and activity, the rows, and
/// the idempotency keys, in one pipelined round trip.
async fn write_entries(db: &ClientWrapper, entries: &[Message]) -> PgResult<()> {
    // Entries are in seq order per conversation, so the last one of each has its new last_seq.
    let mut tops: HashMap<ConversationId, (i64, i64)> = HashMap::new();
    for m in entries {
        tops.insert(m.conversation_id, (m.seq.0, m.ts));
    }
    let mut tops: Vec<_> = tops.into_iter().collect();
    tops.sort_unstable();
    let top_ids: Vec<i64> = tops.iter().map(|t| t.0.0).collect();
    let top_seqs: Vec<i64> = tops.iter().map(|t| t.1.0).collect();
    let top_ts: Vec<i64> = tops.iter().map(|t| t.1.1).collect();

    let convs: Vec<i64> = entries.iter().map(|m| m.conversation_id.0).collect();
    let seqs: Vec<i64> = entries.iter().map(|m| m.seq.0).collect();
    let ids: Vec<i64> = entries.iter().map(|m| m.message_id.0).collect();
    let senders: Vec<i64> = entries.iter().map(|m| m.sender_id.0).collect();
    let devices: Vec<Option<i64>> = entries.iter().map(|m| m.sender_device_id.map(i64::from)).collect();
    let client_ids: Vec<Option<&str>> = entries.iter().map(|m| m.client_id.as_deref()).collect();
    let ts: Vec<i64> = entries.iter().map(|m| m.ts).collect();
    let kinds: Vec<&str> = entries.iter().map(|m| m.kind.as_str()).collect();
    let bodies: Vec<&str> = entries.iter().map(|m| m.body.as_str()).collect();

    let keyed: Vec<&Message> = entries.iter().filter(|m| m.client_id.is_some()).collect();
    let key_senders: Vec<i64> = keyed.iter().map(|m| m.sender_id.0).collect();
    let key_ids: Vec<&str> = keyed.iter().filter_map(|m| m.client_id.as_deref()).collect();
    let key_convs: Vec<i64> = keyed.iter().map(|m| m.conversation_id.0).collect();
    let key_seqs: Vec<i64> = keyed.iter().map(|m| m.seq.0).collect();

    let conv_st = db
        .prepare_cached(
            "UPDATE conversations c SET last_seq = k.last_seq, last_activity = k.ts
             FROM unnest($1::int8[], $2::int8[], $3::int8[]) AS k(id, last_seq, ts) WHERE c.id = k.id",
        )
        .await?;
    let msg_st = db
        .prepare_cached(&format!(
            "INSERT INTO messages ({COLS})
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::text[],
                                  $7::int8[], $8::text[], $9::text[])"
        ))
        .await?;
    let key_st = db
        .prepare_cached(
            "INSERT INTO idempotency (sender_id, client_id, conversation_id, seq)
             SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[], $4::int8[])",
        )
        .await?;
    let conv_params: [&(dyn ToSql + Sync); 3] = [&top_ids, &top_seqs, &top_ts];
    let msg_params: [&(dyn ToSql + Sync); 9] =
        [&convs, &seqs, &ids, &senders, &devices, &client_ids, &ts, &kinds, &bodies];
    tokio::try_join!(db.execute(&conv_st, &conv_params), db.execute(&msg_st, &msg_params), async {
        if key_senders.is_empty() {
            Ok(0)
        } else {
            db.execute(&key_st, &[&key_senders, &key_ids, &key_convs, &key_seqs]).await
        }
    },)?;
    Ok(())
}

/// [`write_entries`] and the pushes the entries cause, in the same transaction. The pushes'
/// recipient query is pipelined with the writes (it reads nothing they write), so a batch whose
/// recipients have no registration costs no extra round trip.
pub(crate) async fn write_entries_and_pushes(ctx: &mut Ctx<'_>, entries: &[Message]) -> PgResult<()> {
    let ((), decisions) = tokio::try_join!(write_entries(ctx.db, entries), crate::push::queue(ctx.db, entries))?;
    if decisions != parley_store::PushDecisions::default() {
        ctx.events.push(StoreEvent::Pushes(decisions));
    }
    Ok(())
}

pub(crate) async fn history(
    db: &ClientWrapper,
    user: UserId,
    conv: ConversationId,
    q: HistoryQuery,
) -> PgResult<Vec<Message>> {
    let Some(Window { joined, last, .. }) = current(db, user, conv).await? else {
        return Err(StoreError::NotFound.into());
    };
    let b = rules::history_bounds(Seq(joined), Seq(last), q.after_seq, q.before_seq);
    let limit = i64::from(q.limit);
    Ok(if b.forward {
        let sql = format!(
            "SELECT {COLS} FROM messages WHERE conversation_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq LIMIT $4"
        );
        messages(&query(db, &sql, &[&conv.0, &b.above.0, &b.below.0, &limit]).await?)?
    } else {
        let sql = format!(
            "SELECT {COLS} FROM messages WHERE conversation_id = $1 AND seq > $2 AND seq < $3
             ORDER BY seq DESC LIMIT $4"
        );
        let mut v = messages(&query(db, &sql, &[&conv.0, &b.above.0, &b.below.0, &limit]).await?)?;
        v.reverse();
        v
    })
}

pub(crate) async fn backlog(db: &ClientWrapper, device: DeviceId, user: UserId) -> PgResult<Vec<Backlog>> {
    let rows = query(
        db,
        "SELECT m.conversation_id, greatest(coalesce(d.seq, 0), m.joined_seq - 1) AS after_seq,
                coalesce(m.left_seq, c.last_seq) AS upto_seq
         FROM members m
         JOIN conversations c ON c.id = m.conversation_id
         LEFT JOIN device_cursors d ON d.device_id = $1 AND d.conversation_id = m.conversation_id
         WHERE m.user_id = $2",
        &[&device.0, &user.0],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Backlog {
                conversation_id: ConversationId(r.try_get(0)?),
                after_seq: Seq(r.try_get(1)?),
                upto_seq: Seq(r.try_get(2)?),
            })
        })
        .collect()
}

pub(crate) async fn range(
    db: &ClientWrapper,
    conv: ConversationId,
    after: i64,
    upto: i64,
    limit: u32,
) -> PgResult<Vec<Message>> {
    let sql = format!(
        "SELECT {COLS} FROM messages WHERE conversation_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4"
    );
    messages(&query(db, &sql, &[&conv.0, &after, &upto, &i64::from(limit)]).await?)
}

pub(crate) async fn receipts(
    db: &ClientWrapper,
    user: UserId,
    conv: ConversationId,
    seq: Seq,
) -> PgResult<ReceiptSummary> {
    let Some(Window { joined, .. }) = current(db, user, conv).await? else {
        return Err(StoreError::NotFound.into());
    };
    if seq < Seq(joined) {
        return Err(StoreError::NotFound.into());
    }
    let Some(sender) =
        query_opt(db, "SELECT sender_id FROM messages WHERE conversation_id = $1 AND seq = $2", &[&conv.0, &seq.0])
            .await?
    else {
        return Err(StoreError::NotFound.into());
    };
    let sender: UserId = UserId(sender.try_get(0)?);
    // The author has, by definition, delivered and read their own message. Counts are answered
    // from the member pointers, never from per-message rows.
    let counts = query_one(
        db,
        "SELECT (SELECT members_count FROM conversations WHERE id = $1),
                count(*) FILTER (WHERE delivered_seq >= $2 OR user_id = $3),
                count(*) FILTER (WHERE read_seq >= $2 OR user_id = $3)
         FROM members WHERE conversation_id = $1 AND left_seq IS NULL",
        &[&conv.0, &seq.0, &sender.0],
    )
    .await?;
    let members_count: i64 = counts.try_get(0)?;
    let members = if members_count <= RECEIPTS_LIVE_MAX_MEMBERS {
        let rows = query(
            db,
            "SELECT user_id, delivered_seq, read_seq FROM members WHERE conversation_id = $1 AND left_seq IS NULL
             ORDER BY joined_seq, user_id",
            &[&conv.0],
        )
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let (u, d, rd): (UserId, i64, i64) = (UserId(r.try_get(0)?), r.try_get(1)?, r.try_get(2)?);
            out.push((u, u == sender || d >= seq.0, u == sender || rd >= seq.0));
        }
        Some(out)
    } else {
        None
    };
    Ok(ReceiptSummary { members_count, delivered_count: counts.try_get(1)?, read_count: counts.try_get(2)?, members })
}

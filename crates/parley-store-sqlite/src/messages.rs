//! The log: sends, history, backlog, pointers and receipts.

use parley_core::ids::*;
use parley_core::limits::RECEIPTS_LIVE_MAX_MEMBERS;
use parley_core::model::*;
use parley_core::rules::{self, Target};
use parley_core::{MessageKind, now_ms};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::writer::WriteCtx;
use parley_store::{Backlog, HistoryQuery, NewMessage, SendOutcome, StoreError, StoreEvent};

use crate::SqlResult as Result;

pub(crate) const COLS: &str =
    "conversation_id, seq, message_id, sender_id, sender_device_id, client_id, ts, kind, body";

pub(crate) fn row(r: &Row<'_>) -> rusqlite::Result<Message> {
    let kind: String = r.get(7)?;
    let kind = MessageKind::parse(&kind).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, format!("unknown kind {kind}").into())
    })?;
    let body: String = r.get(8)?;
    Ok(Message {
        conversation_id: ConversationId(r.get(0)?),
        seq: Seq(r.get(1)?),
        message_id: MessageId(r.get(2)?),
        sender_id: UserId(r.get(3)?),
        sender_device_id: r.get::<_, Option<i64>>(4)?.map(DeviceId),
        client_id: r.get(5)?,
        ts: r.get(6)?,
        kind,
        system: system_of(kind, &body),
        body,
    })
}

pub(crate) use parley_store::entry::Entry;
use parley_store::entry::system_of;

/// Appends one entry to a conversation's log with the next seq and publishes it.
pub(crate) fn insert_entry(ctx: &mut WriteCtx<'_>, e: Entry) -> Result<Message> {
    let ts = now_ms();
    let seq: i64 = ctx
        .conn
        .prepare_cached(
            "UPDATE conversations SET last_seq = last_seq + 1, last_activity = ?2 WHERE id = ?1 RETURNING last_seq",
        )?
        .query_row(params![e.conv.0, ts], |r| r.get(0))?;
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
    ctx.conn
        .prepare_cached(&format!(
            "INSERT INTO messages ({COLS}, target_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ))?
        .execute(params![
            msg.conversation_id.0,
            msg.seq.0,
            msg.message_id.0,
            msg.sender_id.0,
            msg.sender_device_id.map(i64::from),
            msg.client_id,
            msg.ts,
            msg.kind.as_str(),
            msg.body,
            e.target_seq.map(i64::from)
        ])?;
    ctx.events.push(StoreEvent::Message(msg.clone()));
    Ok(msg)
}

pub(crate) use parley_store::entry::Window;

/// `user`'s window on `conv`, current or past; `None` if they never were a member.
pub(crate) fn window(c: &Connection, user: UserId, conv: ConversationId) -> Result<Option<Window>> {
    Ok(c.prepare_cached(
        // Scalar subqueries rather than a join: SQLite re-prepares a join bound to parameters
        // on every execution, and this runs for every send and ack.
        "SELECT m.joined_seq, m.left_seq, (SELECT last_seq FROM conversations WHERE id = ?1), m.role,
                (SELECT kind FROM conversations WHERE id = ?1), (SELECT encrypted FROM conversations WHERE id = ?1),
                (SELECT device_epoch FROM conversations WHERE id = ?1)
         FROM members m WHERE m.conversation_id = ?1 AND m.user_id = ?2",
    )?
    .query_row(params![conv.0, user.0], |r| {
        let (role, kind): (String, String) = (r.get(3)?, r.get(4)?);
        Ok(Window {
            joined: r.get(0)?,
            left: r.get(1)?,
            last: r.get(2)?,
            role: Role::parse(&role),
            kind: ConversationKind::parse(&kind).unwrap_or(ConversationKind::Group),
            encrypted: r.get(5)?,
            device_epoch: r.get(6)?,
        })
    })
    .optional()?)
}

/// `user`'s window if they are a current member.
pub(crate) fn current(c: &Connection, user: UserId, conv: ConversationId) -> Result<Option<Window>> {
    Ok(window(c, user, conv)?.filter(|w| w.left.is_none()))
}

pub(crate) fn send(ctx: &mut WriteCtx<'_>, m: NewMessage) -> Result<SendOutcome> {
    if let Some(client_id) = &m.client_id {
        let original = ctx
            .conn
            .prepare_cached(&format!("SELECT {COLS} FROM messages WHERE sender_id = ?1 AND client_id = ?2"))?
            .query_row(params![m.sender_id.0, client_id], row)
            .optional()?;
        if let Some(message) = original {
            return Ok(SendOutcome { message, duplicate: true });
        }
    }
    let Some(w) = current(ctx.conn, m.sender_id, m.conversation_id)? else {
        return Err(StoreError::NotMember.into());
    };
    rules::encrypted_send(w.encrypted, w.device_epoch, m.kind, m.device_epoch)?;
    if let Some(target) = m.target_seq {
        authorize_target(ctx.conn, &m, &w, target.0)?;
    }
    crate::media::take_refs(ctx, m.sender_id, &m.media)?;
    let message = insert_entry(
        ctx,
        Entry {
            conv: m.conversation_id,
            sender: m.sender_id,
            device: m.sender_device_id,
            client_id: m.client_id,
            kind: m.kind,
            body: m.body,
            target_seq: m.target_seq,
            system: None,
        },
    )?;
    crate::media::record_refs(ctx, &message, &m.media)?;
    if let (MessageKind::Delete, Some(target)) = (message.kind, m.target_seq) {
        crate::media::drop_refs(ctx, message.conversation_id, target)?;
        ctx.conn
            .prepare_cached(
                "UPDATE messages SET body = ?3 WHERE conversation_id = ?1 AND seq = ?2 AND kind = 'encrypted'",
            )?
            .execute(params![message.conversation_id.0, target.0, parley_store::entry::WIPED_CIPHERTEXT])?;
    }
    crate::push::queue(ctx, &message)?;
    Ok(SendOutcome { message, duplicate: false })
}

/// Reads the entry an `edit`, `delete` or `reaction` refers to and applies
/// [`rules::may_target`].
fn authorize_target(c: &Connection, m: &NewMessage, w: &Window, target: i64) -> Result<()> {
    let found: Option<Target> = c
        .prepare_cached(
            "SELECT sender_id, kind, EXISTS (SELECT 1 FROM messages d WHERE d.conversation_id = ?1
                 AND d.target_seq = ?2 AND d.kind = 'delete')
             FROM messages WHERE conversation_id = ?1 AND seq = ?2",
        )?
        .query_row(params![m.conversation_id.0, target], |r| {
            let kind: String = r.get(1)?;
            Ok(Target {
                seq: Seq(target),
                author: UserId(r.get(0)?),
                // An unknown kind is nothing an edit may target.
                kind: MessageKind::parse(&kind).unwrap_or(MessageKind::ConversationCreated),
                deleted: r.get(2)?,
            })
        })
        .optional()?;
    Ok(rules::may_target(m.kind, m.sender_id, w.joined, w.standing(), found)?)
}

pub(crate) fn is_deleted(c: &Connection, conv: ConversationId, seq: Seq) -> Result<bool> {
    Ok(c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE conversation_id = ?1 AND target_seq = ?2 AND kind = 'delete')",
    )?
    .query_row(params![conv.0, seq.0], |r| r.get(0))?)
}

/// Checks that `user` may move a pointer to `seq` in `conv`.
fn check_pointer(c: &Connection, user: UserId, conv: ConversationId, seq: Seq) -> Result<()> {
    Ok(rules::pointer_move(window(c, user, conv)?.map(|w| Seq(w.upto())), seq)?)
}

pub(crate) fn ack(
    ctx: &mut WriteCtx<'_>,
    device: DeviceId,
    user: UserId,
    conv: ConversationId,
    seq: Seq,
) -> Result<()> {
    check_pointer(ctx.conn, user, conv, seq)?;
    ctx.advance_cursor(device, conv, seq);
    ctx.advance_pointers(conv, user, seq, Seq::ZERO);
    Ok(())
}

pub(crate) fn read(ctx: &mut WriteCtx<'_>, user: UserId, conv: ConversationId, seq: Seq) -> Result<()> {
    check_pointer(ctx.conn, user, conv, seq)?;
    // Having read a message implies having it.
    ctx.advance_pointers(conv, user, seq, seq);
    Ok(())
}

pub(crate) fn history(c: &Connection, user: UserId, conv: ConversationId, q: HistoryQuery) -> Result<Vec<Message>> {
    let Some(Window { joined, last, .. }) = current(c, user, conv)? else {
        return Err(StoreError::NotFound.into());
    };
    let b = rules::history_bounds(Seq(joined), Seq(last), q.after_seq, q.before_seq);
    let limit = i64::from(q.limit);
    let mut out: Vec<Message> = if b.forward {
        let mut st = c.prepare_cached(&format!(
            "SELECT {COLS} FROM messages WHERE conversation_id = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq LIMIT ?4"
        ))?;
        st.query_map(params![conv.0, b.above.0, b.below.0, limit], row)?.collect::<rusqlite::Result<_>>()?
    } else {
        let mut st = c.prepare_cached(&format!(
            "SELECT {COLS} FROM messages WHERE conversation_id = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq DESC LIMIT ?4"
        ))?;
        let mut v: Vec<Message> =
            st.query_map(params![conv.0, b.above.0, b.below.0, limit], row)?.collect::<rusqlite::Result<_>>()?;
        v.reverse();
        v
    };
    out.shrink_to_fit();
    Ok(out)
}

pub(crate) fn backlog(c: &Connection, device: DeviceId, user: UserId) -> Result<Vec<Backlog>> {
    let mut st = c.prepare_cached(
        "SELECT m.conversation_id, max(coalesce(d.seq, 0), m.joined_seq - 1) AS after_seq,
                coalesce(m.left_seq, c.last_seq) AS upto_seq
         FROM members m
         JOIN conversations c ON c.id = m.conversation_id
         LEFT JOIN device_cursors d ON d.device_id = ?1 AND d.conversation_id = m.conversation_id
         WHERE m.user_id = ?2",
    )?;
    let rows = st.query_map(params![device.0, user.0], |r| {
        Ok(Backlog { conversation_id: ConversationId(r.get(0)?), after_seq: Seq(r.get(1)?), upto_seq: Seq(r.get(2)?) })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn range(c: &Connection, conv: ConversationId, after: i64, upto: i64, limit: u32) -> Result<Vec<Message>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {COLS} FROM messages WHERE conversation_id = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4"
    ))?;
    let rows = st.query_map(params![conv.0, after, upto, i64::from(limit)], row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn receipts(c: &Connection, user: UserId, conv: ConversationId, seq: Seq) -> Result<ReceiptSummary> {
    let Some(Window { joined, .. }) = current(c, user, conv)? else {
        return Err(StoreError::NotFound.into());
    };
    if seq < Seq(joined) {
        return Err(StoreError::NotFound.into());
    }
    let sender: Option<UserId> = c
        .prepare_cached("SELECT sender_id FROM messages WHERE conversation_id = ?1 AND seq = ?2")?
        .query_row(params![conv.0, seq.0], |r| r.get(0).map(UserId))
        .optional()?;
    let Some(sender) = sender else {
        return Err(StoreError::NotFound.into());
    };
    // The author has, by definition, delivered and read their own message. Counts come from the
    // members' pointers (one contiguous primary-key range), never from per-message rows.
    let count = |col: &str| -> Result<i64> {
        Ok(c.prepare_cached(&format!(
            "SELECT count(*) FROM members WHERE conversation_id = ?1 AND left_seq IS NULL
             AND ({col} >= ?2 OR user_id = ?3)"
        ))?
        .query_row(params![conv.0, seq.0, sender.0], |r| r.get(0))?)
    };
    let members_count: i64 =
        c.prepare_cached("SELECT members_count FROM conversations WHERE id = ?1")?.query_row([conv.0], |r| r.get(0))?;
    let delivered_count = count("delivered_seq")?;
    let read_count = count("read_seq")?;
    let members = if members_count <= RECEIPTS_LIVE_MAX_MEMBERS {
        let mut st = c.prepare_cached(
            "SELECT user_id, delivered_seq, read_seq FROM members WHERE conversation_id = ?1 AND left_seq IS NULL
             ORDER BY joined_seq, user_id",
        )?;
        let rows = st.query_map([conv.0], |r| {
            let (u, d, rd): (UserId, i64, i64) = (UserId(r.get(0)?), r.get(1)?, r.get(2)?);
            Ok((u, u == sender || d >= seq.0, u == sender || rd >= seq.0))
        })?;
        Some(rows.collect::<rusqlite::Result<_>>()?)
    } else {
        None
    };
    Ok(ReceiptSummary { members_count, delivered_count, read_count, members })
}

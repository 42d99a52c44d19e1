//! A conversation's log over REST: history pages, posting (for bots and scripts), receipts.

use parley_core::ids::{ConversationId, Seq};
use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use parley_core::limits::{HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT};
use parley_proto::Id;
use parley_proto::frames::SendFrame;
use parley_proto::rest::{MemberReceipt, MessageEnvelope, Messages, PostMessage, Receipts};
use parley_store::HistoryQuery;

use super::path_id;
use crate::auth::Authed;
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::json::JsonBody;
use crate::service;
use crate::state::App;

fn seq_param(params: &HashMap<String, String>, name: &str) -> ApiResult<Option<i64>> {
    match params.get(name).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Some(n)),
            _ => Err(ApiError::bad_request(format!("{name} must be a non-negative integer"))),
        },
    }
}

pub(super) async fn history(
    State(app): State<Arc<App>>,
    me: Authed,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<Messages>> {
    let limit = match params.get("limit").map(String::as_str) {
        None | Some("") => HISTORY_DEFAULT_LIMIT,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=HISTORY_MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!("limit must be 1 to {HISTORY_MAX_LIMIT}")));
            }
        },
    };
    let q = HistoryQuery {
        after_seq: (seq_param(&params, "after_seq")?).map(Seq),
        before_seq: (seq_param(&params, "before_seq")?).map(Seq),
        limit,
    };
    let messages = app.store.history(me.user_id, ConversationId(path_id(&id)), q).await?;
    Ok(Json(Messages { messages: messages.iter().map(convert::message).collect() }))
}

pub(super) async fn post(
    State(app): State<Arc<App>>,
    me: Authed,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PostMessage>,
) -> ApiResult<(StatusCode, Json<MessageEnvelope>)> {
    let req = SendFrame { conversation_id: Id(path_id(&id)), client_id: req.client_id, kind: req.kind, body: req.body };
    let outcome = async {
        let queued = service::enqueue(&app, me.user_id, me.device_id, req).await?;
        service::finish(&app, queued).await
    }
    .await
    .map_err(|e| {
        // Over REST a conversation you are not in does not exist.
        if e.code == parley_proto::ErrorCode::NotMember { ApiError::not_found() } else { e }
    })?;
    let status = if outcome.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(MessageEnvelope { message: convert::message(&outcome.message) })))
}

pub(super) async fn receipts(
    State(app): State<Arc<App>>,
    me: Authed,
    Path((id, seq)): Path<(String, String)>,
) -> ApiResult<Json<Receipts>> {
    let seq: i64 = seq.parse().map_err(|_| ApiError::bad_request("seq must be an integer"))?;
    let r = app.store.receipts(me.user_id, ConversationId(path_id(&id)), Seq(seq)).await?;
    Ok(Json(Receipts {
        members_count: r.members_count,
        delivered_count: r.delivered_count,
        read_count: r.read_count,
        members: r.members.map(|ms| {
            ms.into_iter().map(|(u, delivered, read)| MemberReceipt { user_id: Id(u.0), delivered, read }).collect()
        }),
    }))
}

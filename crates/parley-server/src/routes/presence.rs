//! `GET /v1/presence?user_ids=...`: presence over REST, with the WebSocket's privacy rules.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use parley_proto::rest::PresenceList;

use crate::auth::Authed;
use crate::error::{ApiError, ApiResult};
use crate::state::App;

/// Most ids one request may ask about.
const MAX_IDS: usize = 256;

pub(super) async fn list(
    State(app): State<Arc<App>>,
    me: Authed,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<PresenceList>> {
    let raw = params.get("user_ids").map(String::as_str).unwrap_or("");
    let ids: Vec<String> = raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(ApiError::bad_request(format!("user_ids must list 1 to {MAX_IDS} comma-separated ids")));
    }
    let presence = app.presence.snapshot(me.user_id, &ids).await?;
    Ok(Json(PresenceList { presence }))
}

//! Conversations: start one, list mine, read one.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use parley_proto::rest::{ConversationEnvelope, Conversations, CreateConversation};

use super::path_id;
use crate::auth::Authed;
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::json::JsonBody;
use crate::state::App;

pub async fn create(
    State(app): State<Arc<App>>,
    me: Authed,
    JsonBody(req): JsonBody<CreateConversation>,
) -> ApiResult<(StatusCode, Json<ConversationEnvelope>)> {
    let (id, created) = match req {
        CreateConversation::Direct { user_id } => app.store.create_direct(me.user_id, user_id.0).await?,
        CreateConversation::Group { .. } => {
            return Err(ApiError::bad_request("group conversations are not available on this server yet"));
        }
    };
    let view = app.store.conversation(me.user_id, id, true).await?.ok_or_else(ApiError::not_found)?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(ConversationEnvelope { conversation: convert::conversation(&view) })))
}

pub async fn list(State(app): State<Arc<App>>, me: Authed) -> ApiResult<Json<Conversations>> {
    let views = app.store.conversations(me.user_id).await?;
    Ok(Json(Conversations { conversations: views.iter().map(convert::conversation).collect() }))
}

pub async fn get_one(
    State(app): State<Arc<App>>,
    me: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<ConversationEnvelope>> {
    let view = app.store.conversation(me.user_id, path_id(&id), true).await?.ok_or_else(ApiError::not_found)?;
    Ok(Json(ConversationEnvelope { conversation: convert::conversation(&view) }))
}

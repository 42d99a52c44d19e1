//! Conversations: start one (direct or group), list mine, read one, and manage a group's title,
//! members and admins.

use parley_core::ids::{ConversationId, UserId};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use parley_core::limits::MAX_GROUP_MEMBERS;
use parley_core::model::Role;
use parley_core::validate;
use parley_proto::rest::{
    AddMembers, ConversationEnvelope, Conversations, CreateConversation, PatchConversation, PatchMember,
};

use super::path_id;
use crate::auth::Authed;
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::json::JsonBody;
use crate::state::App;

/// The caller's view of `id` with members, as every conversation endpoint answers.
async fn envelope(app: &App, user: UserId, id: ConversationId) -> ApiResult<Json<ConversationEnvelope>> {
    let view = app.store.conversation(user, id, true).await?.ok_or_else(ApiError::not_found)?;
    Ok(Json(ConversationEnvelope { conversation: convert::conversation(&view) }))
}

pub(super) async fn create(
    State(app): State<Arc<App>>,
    me: Authed,
    JsonBody(req): JsonBody<CreateConversation>,
) -> ApiResult<(StatusCode, Json<ConversationEnvelope>)> {
    let (id, created) = match req {
        CreateConversation::Direct { user_id, encrypted } => {
            app.store.create_direct(me.user_id, UserId(user_id.0), encrypted).await?
        }
        CreateConversation::Group { title, member_ids, encrypted } => {
            let title = validate::name("title", &title)?;
            // Counted before the store dedupes, so a huge list is refused without a lookup each.
            if member_ids.len() > MAX_GROUP_MEMBERS {
                return Err(ApiError::bad_request(format!("a group has at most {MAX_GROUP_MEMBERS} members")));
            }
            let ids: Vec<UserId> = member_ids.iter().map(|i| UserId(i.0)).collect();
            (app.store.create_group(me.user_id, &title, &ids, encrypted).await?, true)
        }
    };
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, envelope(&app, me.user_id, id).await?))
}

pub(super) async fn list(State(app): State<Arc<App>>, me: Authed) -> ApiResult<Json<Conversations>> {
    let views = app.store.conversations(me.user_id).await?;
    Ok(Json(Conversations { conversations: views.iter().map(convert::conversation).collect() }))
}

pub(super) async fn get_one(
    State(app): State<Arc<App>>,
    me: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<ConversationEnvelope>> {
    envelope(&app, me.user_id, ConversationId(path_id(&id))).await
}

pub(super) async fn patch(
    State(app): State<Arc<App>>,
    me: Authed,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PatchConversation>,
) -> ApiResult<Json<ConversationEnvelope>> {
    let id = ConversationId(path_id(&id));
    let title = validate::name("title", &req.title)?;
    app.store.set_title(me.user_id, id, &title).await?;
    envelope(&app, me.user_id, id).await
}

pub(super) async fn add_members(
    State(app): State<Arc<App>>,
    me: Authed,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<AddMembers>,
) -> ApiResult<Json<ConversationEnvelope>> {
    let id = ConversationId(path_id(&id));
    if req.user_ids.len() > MAX_GROUP_MEMBERS {
        return Err(ApiError::bad_request(format!("a group has at most {MAX_GROUP_MEMBERS} members")));
    }
    let ids: Vec<UserId> = req.user_ids.iter().map(|i| UserId(i.0)).collect();
    app.store.add_members(me.user_id, id, &ids).await?;
    envelope(&app, me.user_id, id).await
}

pub(super) async fn remove_member(
    State(app): State<Arc<App>>,
    me: Authed,
    Path((id, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    app.store.remove_member(me.user_id, ConversationId(path_id(&id)), UserId(path_id(&user))).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn patch_member(
    State(app): State<Arc<App>>,
    me: Authed,
    Path((id, user)): Path<(String, String)>,
    JsonBody(req): JsonBody<PatchMember>,
) -> ApiResult<Json<ConversationEnvelope>> {
    let role = match req.role.as_str() {
        "admin" => Role::Admin,
        "member" => Role::Member,
        _ => return Err(ApiError::bad_request("role must be \"admin\" or \"member\"")),
    };
    let id = ConversationId(path_id(&id));
    app.store.set_role(me.user_id, id, UserId(path_id(&user)), role).await?;
    envelope(&app, me.user_id, id).await
}

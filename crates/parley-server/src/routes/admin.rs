//! The admin API, on only when the server has an `admin_token`: bulk provisioning of accounts
//! (for load tests and for operators importing users).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use parley_core::model::NewAccount;
use parley_core::validate;
use parley_proto::Id;
use parley_proto::rest::{BulkAccount, BulkAccounts, BulkAccountsCreated};
use subtle::ConstantTimeEq;

use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::json::JsonBody;
use crate::state::App;

/// Most accounts one call makes (one transaction).
const MAX_BULK: u32 = 10_000;

fn check_admin(app: &App, headers: &HeaderMap) -> ApiResult<()> {
    // Without a configured token the admin API does not exist.
    let Some(expected) = app.config.admin_token.as_deref() else {
        return Err(ApiError::not_found());
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) { Ok(()) } else { Err(ApiError::unauthorized()) }
}

/// `POST /v1/admin/accounts`: the password is hashed once (argon2id, like any account) and that
/// hash is shared by the batch, so provisioning 10,000 accounts costs one hash, not 10,000.
pub(super) async fn bulk_accounts(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<BulkAccounts>,
) -> ApiResult<(StatusCode, Json<BulkAccountsCreated>)> {
    check_admin(&app, &headers)?;
    if req.count == 0 || req.count > MAX_BULK {
        return Err(ApiError::bad_request(format!("count must be 1 to {MAX_BULK}")));
    }
    validate::password(&req.password)?;
    let names: Vec<String> =
        (0..req.count).map(|n| validate::username(&format!("{}{n}", req.prefix))).collect::<Result<_, _>>()?;
    let hash = app.passwords.hash(&req.password).await?;
    let mut tokens = Vec::with_capacity(names.len());
    let accounts = names
        .into_iter()
        .map(|username| {
            let token = auth::new_token();
            let account = NewAccount {
                display_name: username.clone(),
                username,
                password_hash: hash.clone(),
                device_name: "provisioned".into(),
                token_hash: auth::token_hash(&token),
            };
            tokens.push(token);
            account
        })
        .collect();
    let made = app.store.create_accounts(accounts).await?;
    let accounts = made
        .into_iter()
        .zip(tokens)
        .map(|((user, device), token)| BulkAccount {
            user_id: Id(user.id.0),
            username: user.username,
            device_id: Id(device.id.0),
            token,
        })
        .collect();
    Ok((StatusCode::CREATED, Json(BulkAccountsCreated { accounts })))
}

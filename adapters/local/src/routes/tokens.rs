//! T1 login, T2 logout.

use crate::auth::same_secret;
use crate::errors::{ApiError, ApiResult};
use crate::extract::{Body, Id};
use crate::shared::Shared;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use std::sync::Arc;
use volbridge_proto::csp::AccessToken;

pub async fn login(
    State(sh): State<Arc<Shared>>,
    Body(req): Body<AccessToken>,
) -> ApiResult<Json<AccessToken>> {
    let username = req
        .username
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::bad_request("username is required"))?;
    let password = req
        .password
        .ok_or_else(|| ApiError::bad_request("password is required"))?;
    let user_ok = same_secret(&username, &sh.cfg.username);
    let pass_ok = same_secret(&password, &sh.cfg.password);
    if !(user_ok & pass_ok) {
        // The submitted name is not echoed: it may be a secret of the caller's.
        return Err(ApiError::unauthorized("invalid username or password"));
    }
    let array_ip = req.array_ip.filter(|a| !a.is_empty());
    Ok(Json(sh.tokens.issue(&username, array_ip)))
}

pub async fn logout(State(sh): State<Arc<Shared>>, Id(id): Id) -> ApiResult<StatusCode> {
    if sh.tokens.logout(&id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("token not found"))
    }
}

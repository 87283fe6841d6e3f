//! One module per resource of csp-api.md §3.

pub mod clones;
pub mod create_rules;
pub mod groups;
pub mod hosts;
pub mod misc;
pub mod publish;
pub mod snapshot_metadata;
pub mod snapshots;
pub mod tokens;
pub mod volumes;

use crate::errors::ApiError;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use volbridge_proto::csp::{Config, BACKGROUND_STATUS, PROTOCOL_LOCAL};

/// A 200 answer holding a JSON array of `items`, each made and written one at a time: a
/// listing never holds every view at once, only the text (sized from `per_item`).
pub fn json_array<T: Serialize>(
    count: usize,
    per_item: usize,
    items: impl Iterator<Item = T>,
) -> Response {
    let mut body = Vec::with_capacity(2 + count.saturating_mul(per_item));
    body.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        if let Err(e) = serde_json::to_writer(&mut body, &item) {
            return ApiError::internal(format!("cannot encode the listing: {e}")).into_response();
        }
    }
    body.push(b']');
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}

pub fn volume_key(id: &str) -> String {
    format!("volume:{id}")
}

pub fn snapshot_key(id: &str) -> String {
    format!("snapshot:{id}")
}

/// Sizes are bytes, > 0 and a multiple of 512 (B14, B15).
pub fn check_size(size: u64) -> Result<u64, ApiError> {
    if size == 0 {
        return Err(ApiError::bad_request("size must be greater than 0"));
    }
    if !size.is_multiple_of(512) {
        return Err(ApiError::bad_request(format!(
            "size {size} is not a multiple of 512 bytes"
        )));
    }
    if size > i64::MAX as u64 {
        return Err(ApiError::bad_request(format!("size {size} is too large")));
    }
    Ok(size)
}

/// The protocol `p` names, lower-case, when this CSP serves it (`served`); `None` when
/// absent (`""` counts as absent).
pub fn check_protocol(p: Option<&str>, served: &[&str]) -> Result<Option<String>, ApiError> {
    match p.map(str::trim) {
        None | Some("") => Ok(None),
        Some(p) if served.iter().any(|s| p.eq_ignore_ascii_case(s)) => {
            Ok(Some(p.to_ascii_lowercase()))
        }
        Some(p) => Err(ApiError::bad_request(format!(
            "unsupported access protocol '{p}': the local CSP serves only {}{}",
            served
                .iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", "),
            if served.len() == 1 {
                " (it serves iscsi and nvmetcp once given export addresses: \
                 volbridge csp serve --iscsi-portal / --nvme-address)"
            } else {
                ""
            }
        ))),
    }
}

/// Validates a create-time config: known keys must have valid values; `null` values and
/// the read-only background status are dropped.
pub fn create_config(config: Option<Config>, served: &[&str]) -> Result<Config, ApiError> {
    let mut c = config.unwrap_or_default();
    c.retain(|k, v| !v.is_null() && k != BACKGROUND_STATUS);
    if let Some(v) = c.get("access_protocol") {
        let Some(p) = v.as_str() else {
            return Err(ApiError::bad_request(
                "config 'access_protocol' must be a string",
            ));
        };
        if let Some(p) = check_protocol(Some(p), served)? {
            // Each network volume has a target of its own: nodes log out of it when they
            // detach the volume.
            if p != PROTOCOL_LOCAL {
                c.insert("target_scope".into(), "volume".into());
            }
            c.insert("access_protocol".into(), p.into());
        }
    }
    for key in ["thick", "destroy_on_delete", "multi_initiator"] {
        crate::model::config_bool(&c, key).map_err(ApiError::bad_request)?;
    }
    Ok(c)
}

/// A config value with `null` entries removed (snapshot and group configs).
pub fn plain_config(config: Option<Config>) -> Config {
    let mut c = config.unwrap_or_default();
    c.retain(|_, v| !v.is_null());
    c
}

//! H1–H5: hosts, upserted by uuid (B23–B25, §8.4).
//!
//! A host record is information about the host: its initiators and the access protocol it
//! announces are stored whatever the protocol, even one this CSP cannot serve (a node with
//! open-iscsi registers with `iscsi` and its IQN). What this CSP serves is decided at
//! publish (V6), which refuses other protocols.

use crate::errors::{ApiError, ApiResult};
use crate::extract::{Body, Id, Params};
use crate::model::Change;
use crate::shared::Shared;
use crate::views;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use std::sync::Arc;
use volbridge_proto::csp::{Host, PROTOCOL_LOCAL};
use volbridge_proto::initiators::{self, InitiatorKind};

fn not_found(uuid: &str) -> ApiError {
    ApiError::not_found(format!("host '{uuid}' not found"))
}

pub async fn list(State(sh): State<Arc<Shared>>) -> ApiResult<Json<Vec<Host>>> {
    let hosts = sh
        .store
        .query(|s| s.t.hosts.values().map(views::host).collect())
        .await?;
    Ok(Json(hosts))
}

pub async fn get(State(sh): State<Arc<Shared>>, Id(uuid): Id) -> ApiResult<Json<Host>> {
    sh.store
        .query(|s| s.host(&uuid).map(views::host))
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&uuid))
}

pub async fn upsert(State(sh): State<Arc<Shared>>, Body(req): Body<Host>) -> ApiResult<Json<Host>> {
    let uuid = crate::ids::check_name("host uuid", req.uuid.as_deref())?;
    if let Some(name) = req.name.as_deref() {
        crate::ids::check_name("host name", Some(name))?;
    }
    check_initiators(&uuid, &req)?;
    let protocol = match req.access_protocol.as_deref().map(str::trim) {
        None | Some("") => PROTOCOL_LOCAL.to_owned(),
        Some(p) => crate::ids::check_name("access_protocol", Some(p))?.to_ascii_lowercase(),
    };
    let host = Host {
        id: Some(uuid.clone()),
        uuid: Some(uuid.clone()),
        access_protocol: Some(protocol),
        ..req
    };
    let stored = sh
        .store
        .commit(|s| {
            for (other_uuid, other) in &s.t.hosts {
                if *other_uuid == uuid {
                    continue;
                }
                let taken = host
                    .iqns
                    .iter()
                    .chain(&host.wwpns)
                    .chain(&host.nqns)
                    .find(|i| {
                        other.iqns.contains(i) || other.wwpns.contains(i) || other.nqns.contains(i)
                    });
                if let Some(initiator) = taken {
                    return Err(ApiError::conflict(format!(
                        "initiator '{initiator}' is already registered to host '{other_uuid}'"
                    )));
                }
            }
            if s.host(&uuid) == Some(&host) {
                return Ok((host.clone(), vec![]));
            }
            Ok((host.clone(), vec![Change::PutHost(host.clone())]))
        })
        .await?;
    Ok(Json(views::host(&stored)))
}

/// The host's IQNs and NQNs must be initiator names: a target made for the host names it by
/// them (a directory of LIO's or nvmet's configfs), so a path in their place is refused here.
/// Blank entries are no name (a node without one may send `[""]`) and are passed over, as
/// the export passes them over; surrounding blanks are not part of the name.
fn check_initiators(uuid: &str, req: &Host) -> ApiResult<()> {
    let named = req
        .iqns
        .iter()
        .map(|n| (InitiatorKind::Iqn, n.trim()))
        .chain(req.nqns.iter().map(|n| (InitiatorKind::Nqn, n.trim())))
        .filter(|(_, n)| !n.is_empty());
    for (kind, name) in named {
        if let Err(why) = initiators::check(kind, name) {
            return Err(ApiError::bad_request(format!(
                "host '{uuid}': '{}' is not {}: {why} (a Linux node's own is in {})",
                name.escape_debug(),
                kind.noun(),
                kind.node_file()
            )));
        }
    }
    Ok(())
}

async fn remove(sh: &Shared, uuid: &str) -> ApiResult<StatusCode> {
    sh.store
        .commit(|s| {
            if s.host(uuid).is_none() {
                return Err(not_found(uuid));
            }
            let published =
                s.t.volumes
                    .values()
                    .filter(|v| v.hosts.contains(uuid))
                    .count();
            if published > 0 {
                return Err(ApiError::conflict(format!(
                    "host '{uuid}' still has {published} published volume(s)"
                )));
            }
            Ok(((), vec![Change::DeleteHost(uuid.to_owned())]))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete(State(sh): State<Arc<Shared>>, Id(uuid): Id) -> ApiResult<StatusCode> {
    remove(&sh, &uuid).await
}

pub async fn delete_by_query(
    State(sh): State<Arc<Shared>>,
    params: Params,
) -> ApiResult<StatusCode> {
    let uuid = params
        .get("uuid")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::bad_request("query parameter 'uuid' is required"))?;
    remove(&sh, uuid).await
}

//! Host upsert (H2) and the publish (B33) / unpublish (B30) flows.

use http::{Method, StatusCode};
use serde_json::Value;
use tracing::warn;
use volbridge_proto::csp::{Host, PublishInfo, PublishOptions};

use super::client::{CspClient, Op};
use volbridge_base::error::{Error, ErrorKind, Result};

/// B31: every LUN (top level and peers) must be ≥ 0; a missing one reads as 0 (D18).
pub(crate) fn check_luns(info: &mut PublishInfo) -> Result<()> {
    let invalid = |lun: i64| Error::internal(format!("CSP returned invalid LUN {lun}"));
    match info.lun_id {
        Some(l) if l < 0 => return Err(invalid(l)),
        Some(_) => {}
        None => {
            warn!(
                serial = info.serial_number,
                "CSP publish answer has no lun_id, using 0"
            );
            info.lun_id = Some(0);
        }
    }
    for peer in &mut info.peer_array_details {
        match peer.lun_id {
            Some(l) if l < 0 => return Err(invalid(l)),
            Some(_) => {}
            None => peer.lun_id = Some(0),
        }
    }
    Ok(())
}

impl CspClient {
    /// H2, an upsert keyed by `uuid` (B23); the answer body is ignored.
    pub async fn upsert_host(&self, host: &Host) -> Result<()> {
        if host.uuid.as_deref().is_none_or(str::is_empty) {
            return Err(Error::invalid("host.uuid", "a host needs its node uuid"));
        }
        let body = serde_json::to_vec(host).expect("hosts serialise");
        let reply = self
            .call(Method::POST, &["hosts"], &[], Some(&body))
            .await?;
        let chap = host.chap_password.as_deref().unwrap_or("");
        if reply.status.is_success() {
            Ok(())
        } else {
            let e = self.check(reply, Op::Other).unwrap_err();
            Err(self.scrub(e, &[chap]))
        }
    }

    /// H1: whether a host with this uuid is registered; `None` when the CSP does not list
    /// hosts (H1 is optional), so the caller cannot tell.
    pub async fn host_registered(&self, uuid: &str) -> Result<Option<bool>> {
        Ok(self
            .hosts()
            .await?
            .map(|hosts| hosts.iter().any(|h| h.uuid.as_deref() == Some(uuid))))
    }

    /// H1: the record of host `uuid` as registered (its initiator names included); `None`
    /// when there is none or the CSP does not list hosts.
    pub async fn registered_host(&self, uuid: &str) -> Result<Option<Host>> {
        Ok(self
            .hosts()
            .await?
            .and_then(|hosts| hosts.into_iter().find(|h| h.uuid.as_deref() == Some(uuid))))
    }

    /// H1, `None` when the CSP does not list hosts (H1 is optional).
    async fn hosts(&self) -> Result<Option<Vec<Host>>> {
        let reply = self.call(Method::GET, &["hosts"], &[], None).await?;
        if matches!(reply.status.as_u16(), 404 | 405 | 501) {
            return Ok(None);
        }
        let reply = self.check(reply, Op::Other)?;
        Ok(Some(self.decode_list(&reply, "host list")?))
    }

    /// B33: V3, H2 (B22, every time), V6, B31. The protocol defaults to the volume's
    /// `config.access_protocol`, else the CSP's own default.
    pub async fn publish_volume(
        &self,
        volume_id: &str,
        host: &Host,
        access_protocol: Option<&str>,
    ) -> Result<PublishInfo> {
        let volume = self.get_volume(volume_id).await?;
        let protocol = access_protocol
            .map(str::to_owned)
            .or_else(|| {
                volume
                    .config
                    .as_ref()
                    .and_then(|c| c.get("access_protocol"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .filter(|p| !p.is_empty())
            .map(|p| p.to_ascii_lowercase());
        let mut host = host.clone();
        if host.access_protocol.is_none() {
            host.access_protocol = protocol.clone();
        }
        let host_uuid = host.uuid.clone().unwrap_or_default();
        // A 400 is most often a protocol the CSP (or this volume) does not serve: say which
        // step refused what, before the CSP's own sentence.
        let over = |p: Option<&str>| match p {
            Some(p) => format!("access protocol '{p}'"),
            None => "the CSP's default access protocol".to_owned(),
        };
        let refused = |e: Error, what: String| match e.kind {
            ErrorKind::InvalidArgument => e.context(what),
            _ => e,
        };
        self.upsert_host(&host).await.map_err(|e| {
            let p = host.access_protocol.as_deref();
            refused(
                e,
                format!("the CSP refused to register host {host_uuid} ({})", over(p)),
            )
        })?;
        let body_protocol = protocol.clone();
        let body = PublishOptions {
            host_uuid: Some(host_uuid.clone()),
            access_protocol: protocol,
            ..PublishOptions::default()
        };
        let body = serde_json::to_vec(&body).expect("publish options serialise");
        let path = ["volumes", volume_id, "actions", "publish"];
        let reply = self.call(Method::PUT, &path, &[], Some(&body)).await?;
        let chap = host.chap_password.as_deref().unwrap_or("");
        if reply.status == StatusCode::NOT_FOUND {
            return Err(match self.get_volume_opt(volume_id).await? {
                None => Error::not_found(format!("volume {volume_id} not found")),
                Some(_) => Error::not_found(format!(
                    "host {host_uuid} not found on the CSP while publishing volume {volume_id}"
                )),
            });
        }
        let reply = self.check(reply, Op::Other).map_err(|e| {
            let what = format!(
                "the CSP refused to publish volume {volume_id} to host {host_uuid} with {}",
                over(body_protocol.as_deref())
            );
            self.scrub(refused(e, what), &[chap])
        })?;
        let mut info: PublishInfo = self
            .decode(&reply, "publish answer")
            .map_err(|e| self.scrub(e, &[chap]))?;
        check_luns(&mut info)?;
        Ok(info)
    }

    /// B30: V3 (gone → done), not published → done, else V7 with the node id as given.
    pub async fn unpublish_volume(&self, volume_id: &str, host_uuid: &str) -> Result<()> {
        let Some(volume) = self.get_volume_opt(volume_id).await? else {
            return Ok(());
        };
        if volume.published == Some(false) {
            return Ok(());
        }
        let body = PublishOptions {
            host_uuid: Some(host_uuid.to_owned()),
            ..PublishOptions::default()
        };
        let body = serde_json::to_vec(&body).expect("unpublish options serialise");
        let path = ["volumes", volume_id, "actions", "unpublish"];
        let reply = self.call(Method::PUT, &path, &[], Some(&body)).await?;
        match reply.status {
            StatusCode::NOT_FOUND => Ok(()),
            _ => self.check(reply, Op::Other).map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use volbridge_proto::csp::SecondaryLunInfo;

    #[test]
    fn lun_rules() {
        let mut info = PublishInfo::default();
        check_luns(&mut info).unwrap();
        assert_eq!(info.lun_id, Some(0));
        info.lun_id = Some(-1);
        assert_eq!(
            check_luns(&mut info).unwrap_err().kind,
            volbridge_base::error::ErrorKind::Internal
        );
        info.lun_id = Some(3);
        info.peer_array_details = vec![SecondaryLunInfo::default()];
        check_luns(&mut info).unwrap();
        assert_eq!(info.peer_array_details[0].lun_id, Some(0));
        info.peer_array_details[0].lun_id = Some(-4);
        assert!(check_luns(&mut info).is_err());
    }
}

//! ListVolumes: pages over one listing of the default backend, kept between the pages of a
//! walk while nothing changes through the daemon (`paging.rs`), with the published nodes
//! of every entry from one read of the grant records.

use super::paging::{self, Start};
use super::status::status;
use super::Csi;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use volbridge_proto::csi as pb;

impl Csi {
    pub(super) async fn list_volumes_call(
        &self,
        request: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        let req = request.into_inner();
        let start = paging::parse_token(&req.starting_token)?;
        let embedded = self.engine.is_embedded(None).map_err(status)?;
        let backend = self.engine.backends().resolve(None).map_err(status)?;
        let query = format!("volumes@{}", backend.name);
        let generation = backend.client.write_generation();
        let kept = match start {
            Start::After {
                listing: Some(id), ..
            } => self.volume_listings.fresh(id, &query, generation),
            _ => None,
        };
        let (mut listing_id, volumes) = match kept {
            Some(l) => (l.id, l.items),
            None => {
                let volumes = self
                    .engine
                    .list_volumes(Some(&backend.name))
                    .await
                    .map_err(status)?;
                (None, Arc::new(volumes))
            }
        };
        let after = match start {
            Start::First => None,
            Start::After { name, .. } => Some(name),
        };
        let (range, more) = paging::window(&volumes, |v| &v.name, req.max_entries, after);
        // Published nodes from one read of the grant records, not one per entry.
        let mut nodes: HashMap<&str, Vec<String>> = HashMap::new();
        let grants = self.engine.grants().map_err(status)?;
        for g in &grants {
            if g.backend == backend.name {
                nodes
                    .entry(g.volume_name.as_str())
                    .or_default()
                    .push(g.node_id.clone());
            }
        }
        let entries = volumes[range.clone()]
            .iter()
            .map(|v| pb::list_volumes_response::Entry {
                volume: Some(self.csi_volume(v, embedded, None)),
                status: Some(pb::list_volumes_response::VolumeStatus {
                    published_node_ids: nodes.remove(v.name.as_str()).unwrap_or_default(),
                    volume_condition: Some(Self::condition(v)),
                }),
            })
            .collect();
        let next_token = match (more, listing_id) {
            (false, Some(id)) => {
                self.volume_listings.drop_listing(id);
                String::new()
            }
            (false, None) => String::new(),
            (true, _) => {
                // Kept for the next pages, unless something changed while it was read.
                if listing_id.is_none() && backend.client.write_generation() == generation {
                    listing_id = Some(self.volume_listings.keep(
                        &query,
                        generation,
                        volumes.clone(),
                    ));
                    self.expire_listings_later();
                }
                paging::next_token(listing_id, &volumes[range.end - 1].name)
            }
        };
        Ok(Response::new(pb::ListVolumesResponse {
            entries,
            next_token,
        }))
    }

    /// Drops the kept listings of abandoned walks once they expire, so that none holds
    /// memory while no ListVolumes comes to expire it.
    fn expire_listings_later(&self) {
        let listings = self.volume_listings.clone();
        tokio::spawn(async move {
            tokio::time::sleep(paging::KEEP + std::time::Duration::from_secs(1)).await;
            listings.expire();
        });
    }
}

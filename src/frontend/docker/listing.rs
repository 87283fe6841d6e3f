//! The volumes of the default backend that this node holds no Docker record of (made by
//! the CLI, CSI or FlexVolume, or by Docker on another node), for List: `docker volume ls`
//! shows every volume of the driver, whichever front end made it. Get adopts such a volume
//! when Docker first names it (`engine::mount_table`).
//!
//! A List waits at most [`LIST_BUDGET`] for the backend's listing; past it (a slow or
//! unreachable CSP) it answers from the last listing, and the records always answer, so a
//! CSP outage never hides a volume Docker knows. One listing runs at a time.

use crate::engine::Engine;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a List waits for the default backend's listing.
pub const LIST_BUDGET: Duration = Duration::from_millis(500);

#[derive(Default)]
pub struct Listing {
    /// Names of the last listing that answered, Docker-valid ones only.
    last: Mutex<Vec<String>>,
    /// Held while a listing runs.
    running: Arc<tokio::sync::Mutex<()>>,
}

impl Listing {
    /// The default backend's volume names: a fresh listing when it answers within
    /// [`LIST_BUDGET`], else the last one.
    pub async fn names(self: &Arc<Self>, engine: &Arc<Engine>) -> Vec<String> {
        if let Ok(permit) = self.running.clone().try_lock_owned() {
            let (engine, me) = (engine.clone(), self.clone());
            let task = tokio::spawn(async move {
                let _permit = permit;
                let backend = engine.backends().default_name().to_owned();
                match engine.list_volumes(Some(&backend)).await {
                    Ok(list) => {
                        let names = list
                            .into_iter()
                            .map(|v| v.name)
                            // Docker could not name the others (`docs/vocabulary.md`).
                            .filter(|n| volbridge_proto::names::check_user_name(n).is_ok())
                            .collect();
                        *me.last.lock().unwrap_or_else(|p| p.into_inner()) = names;
                    }
                    Err(e) => {
                        tracing::debug!(backend = %backend, error = %e.message, "Docker List: the backend's volumes stay as last listed");
                    }
                }
            });
            let _ = tokio::time::timeout(LIST_BUDGET, task).await;
        }
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

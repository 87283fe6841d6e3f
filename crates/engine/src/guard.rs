//! A per-object operation guard: one operation at a time per volume (or snapshot), with no
//! global lock. CSI asks with `try_lock` and answers Aborted at once; Docker, FlexVolume and
//! the CLI wait with a bound. The guard is released on drop and its entry removed when idle.
//! The engine's instance is volbridge's one lock table (keys: ARCHITECTURE.md, "Guards"); the
//! type is not exported, so no front end keeps another beside it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use volbridge_base::error::{Error, ErrorKind, Result};

#[derive(Clone, Default)]
pub struct OpGuards {
    slots: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

/// Held while an operation runs on one key.
pub struct OpGuard {
    key: String,
    permit: Option<OwnedSemaphorePermit>,
    slots: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl OpGuards {
    fn slot(&self, key: &str) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone()
    }

    fn guard(&self, key: &str, permit: OwnedSemaphorePermit) -> OpGuard {
        OpGuard {
            key: key.to_owned(),
            permit: Some(permit),
            slots: self.slots.clone(),
        }
    }

    /// Takes the guard or fails with Aborted if another operation holds it.
    pub fn try_lock(&self, key: &str) -> Result<OpGuard> {
        let taken = self.slot(key).try_acquire_owned();
        match taken {
            Ok(permit) => Ok(self.guard(key, permit)),
            Err(_) => {
                self.forget_if_idle(key);
                Err(busy(key))
            }
        }
    }

    /// Waits up to `bound` for the guard, then fails with Aborted.
    pub async fn lock(&self, key: &str, bound: Duration) -> Result<OpGuard> {
        let taken = tokio::time::timeout(bound, self.slot(key).acquire_owned()).await;
        match taken {
            Ok(Ok(permit)) => Ok(self.guard(key, permit)),
            _ => {
                self.forget_if_idle(key);
                Err(busy(key))
            }
        }
    }

    fn forget_if_idle(&self, key: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map holds it: nobody runs or waits on this key.
        if slots.get(key).is_some_and(|s| Arc::strong_count(s) == 1) {
            slots.remove(key);
        }
    }

    /// How many keys have an operation running or waiting.
    #[cfg(test)]
    pub fn active(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn busy(key: &str) -> Error {
    Error::new(
        ErrorKind::Aborted,
        format!("an operation on '{key}' is already in progress; try again"),
    )
}

impl std::fmt::Debug for OpGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpGuard").field("key", &self.key).finish()
    }
}

impl Drop for OpGuard {
    fn drop(&mut self) {
        // Release first so that the idle check sees only the map's reference.
        drop(self.permit.take());
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots
            .get(&self.key)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            slots.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_try_is_aborted_and_entry_is_cleaned() {
        let guards = OpGuards::default();
        let g = guards.try_lock("local/v1").unwrap();
        assert_eq!(
            guards.try_lock("local/v1").unwrap_err().kind,
            ErrorKind::Aborted
        );
        guards.try_lock("local/v2").unwrap();
        drop(g);
        assert_eq!(guards.active(), 0);
        guards.try_lock("local/v1").unwrap();
    }

    #[tokio::test]
    async fn waiters_get_the_guard_in_turn_or_time_out() {
        let guards = OpGuards::default();
        let g = guards.lock("k", Duration::from_secs(1)).await.unwrap();
        let e = guards
            .lock("k", Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Aborted);
        let g2 = guards.clone();
        let waiter =
            tokio::spawn(async move { g2.lock("k", Duration::from_secs(5)).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(g);
        waiter.await.unwrap().unwrap();
        assert_eq!(guards.active(), 0);
    }
}

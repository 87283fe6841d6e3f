//! Async locks per object key, held across the file I/O of one operation (expand, delete,
//! snapshot, clone) so that two operations never touch one image at once. Entries live
//! only while someone holds or waits for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Table = Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>;

#[derive(Default)]
pub struct KeyedLocks {
    table: Table,
}

pub struct KeyGuard {
    table: Table,
    key: String,
    lock: Arc<AsyncMutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.guard.take();
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        // Two references: the table's and ours. Nobody else holds or awaits it.
        if Arc::strong_count(&self.lock) == 2 {
            t.remove(&self.key);
        }
    }
}

impl KeyedLocks {
    /// Locks all `keys` in sorted order (so that two callers never deadlock).
    pub async fn lock(&self, keys: &[String]) -> Vec<KeyGuard> {
        let mut keys: Vec<&String> = keys.iter().collect();
        keys.sort();
        keys.dedup();
        let mut guards = Vec::with_capacity(keys.len());
        for key in keys {
            let lock = {
                let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
                t.entry(key.clone()).or_default().clone()
            };
            let guard = lock.clone().lock_owned().await;
            guards.push(KeyGuard {
                table: self.table.clone(),
                key: key.clone(),
                lock,
                guard: Some(guard),
            });
        }
        guards
    }

    pub async fn lock_one(&self, key: String) -> Vec<KeyGuard> {
        self.lock(&[key]).await
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn locks_exclude_and_clean_up() {
        let locks = Arc::new(KeyedLocks::default());
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (locks, counter) = (locks.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock(&["b".into(), "a".into(), "a".into()]).await;
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                assert_eq!(n, 0);
                tokio::task::yield_now().await;
                counter.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(locks.len(), 0);
    }
}

//! Per-key locks that serialize conditional writes to one key through one
//! coordinator. A lock exists only while someone holds or waits for it (the
//! table holds one entry per key in that state, so it is bounded by the
//! conditional writes in flight), it is the key's own — never shared with
//! other keys, so a client cannot queue behind it with keys that merely hash
//! alike — and a waiter gives up after a deadline instead of queueing
//! without end. Dropping a waiter (its request went away) leaves the queue.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// The table of keys locked or waited for.
#[derive(Default)]
pub struct KeyLocks {
    table: Mutex<HashMap<Bytes, Arc<AsyncMutex<()>>>>,
}

/// A held key lock; released (and its entry removed when nobody else
/// waits) when dropped.
pub struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: Bytes,
    lock: Option<Arc<AsyncMutex<()>>>,
    guard: Option<OwnedMutexGuard<()>>,
}

/// The lock was not free within the deadline.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

impl KeyLocks {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, Arc<AsyncMutex<()>>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keys locked or waited for now.
    pub fn len(&self) -> usize {
        self.table().len()
    }

    pub fn is_empty(&self) -> bool {
        self.table().is_empty()
    }

    /// Locks `key`, waiting at most `wait`.
    pub async fn lock(&self, key: &Bytes, wait: Duration) -> Result<KeyGuard<'_>, Busy> {
        let lock = self.table().entry(key.clone()).or_default().clone();
        let mut held = KeyGuard {
            locks: self,
            key: key.clone(),
            lock: Some(lock.clone()),
            guard: None,
        };
        // On a timeout (or if this future is dropped) `held` drops without
        // a guard and removes the entry if nobody else needs it.
        let guard = tokio::time::timeout(wait, lock.lock_owned())
            .await
            .map_err(|_| Busy)?;
        held.guard = Some(guard);
        Ok(held)
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let Some(lock) = self.lock.take() else {
            return;
        };
        let mut table = self.locks.table();
        // Ours and the table's: nobody else holds or waits for it.
        if Arc::strong_count(&lock) == 2 {
            table.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[tokio::test]
    async fn one_key_at_a_time_and_the_table_empties() {
        let locks = KeyLocks::default();
        let a = locks.lock(&key("a"), Duration::from_secs(1)).await.unwrap();
        // Another key is not behind it.
        let b = locks
            .lock(&key("b"), Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(
            locks.lock(&key("a"), Duration::from_millis(20)).await.err(),
            Some(Busy),
            "a waiter gives up at its deadline"
        );
        assert_eq!(locks.len(), 2);
        drop(a);
        drop(b);
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn a_waiter_gets_the_lock_when_it_is_released() {
        let locks = Arc::new(KeyLocks::default());
        let held = locks.lock(&key("k"), Duration::from_secs(1)).await.unwrap();
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move {
            let g = l2.lock(&key("k"), Duration::from_secs(5)).await;
            g.is_ok()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(locks.len(), 1);
        drop(held);
        assert!(waiter.await.unwrap());
        assert!(locks.is_empty(), "the waiter released it too");
    }

    #[tokio::test]
    async fn an_abandoned_waiter_leaves_no_entry() {
        let locks = KeyLocks::default();
        let held = locks.lock(&key("k"), Duration::from_secs(1)).await.unwrap();
        {
            let k = key("k");
            let wait = locks.lock(&k, Duration::from_secs(5));
            let _ = tokio::time::timeout(Duration::from_millis(10), wait).await;
        }
        drop(held);
        assert!(locks.is_empty());
    }
}

//! Moving records between us and one peer during an exchange: pulling what
//! the peer holds newer, pushing what we hold newer, in batches bounded in
//! bytes, counted and throttled to the configured bandwidth.

use super::pages::{value_len, within_value_limit};
use super::{RepairService, RunSummary, SyncError, MOVE_KEYS};
use crate::limits::{record_wire_bytes, BACKGROUND_BATCH_ITEMS};
use crate::metrics::Metrics;
use crate::record::Record;
use crate::storage::StoreError;
use crate::wire::{Request, Response, WireRecord};
use bytes::Bytes;
use std::time::Instant;

/// Moves records between us and one peer, counting and throttling.
pub(super) struct Mover<'a> {
    pub(super) svc: &'a RepairService,
    pub(super) peer: &'a str,
    pub(super) started: Instant,
    pub(super) moved: u64,
}

impl Mover<'_> {
    /// Fetches the peer's records of `keys` and applies them here.
    pub(super) async fn pull(
        &mut self,
        mut keys: Vec<Bytes>,
        sum: &mut RunSummary,
    ) -> Result<(), SyncError> {
        keys.retain(|k| !k.is_empty());
        let stats = &self.svc.core.local.stats;
        while !keys.is_empty() {
            let asked = request_prefix(&keys, self.svc.budget());
            let request = Request::ReadMany {
                keys: keys[..asked].to_vec(),
                max_bytes: self.svc.budget() as u32,
            };
            let Response::Records { items } = self.svc.call(self.peer, request).await? else {
                return Err(SyncError::Protocol("unexpected answer to ReadMany".into()));
            };
            if items.is_empty()
                || items.len() > asked
                || items.iter().zip(&keys).any(|((k, _), want)| k != want)
            {
                return Err(SyncError::Protocol(
                    "ReadMany answered other keys than asked".into(),
                ));
            }
            keys.drain(..items.len());
            // A record over the value limit (a hostile peer, or one stored
            // before the limit was lowered) is not stored; the rest of the
            // exchange goes on, and the leaf stays different until a write
            // within the limit replaces it.
            let max_value = self.svc.config.max_value;
            let items: Vec<_> = items
                .into_iter()
                .filter(|(_, r)| {
                    r.as_ref().is_none_or(|r| {
                        within_value_limit(r.value_len(), max_value, "an anti-entropy pull")
                    })
                })
                .collect();
            let records: Vec<(Bytes, Record)> = items
                .into_iter()
                .filter_map(|(k, r)| r.map(|r| (k, Record::from(r))))
                .collect();
            let bytes: u64 = records
                .iter()
                .map(|(k, r)| (k.len() + value_len(r)) as u64)
                .sum();
            sum.keys_pulled += records.len() as u64;
            sum.bytes += bytes;
            Metrics::add(&stats.ae_keys_pulled, records.len() as u64);
            Metrics::add(&stats.ae_bytes, bytes);
            if !records.is_empty() {
                let outcome = self.svc.core.local.write_batch(records).await?;
                sum.keys_left += outcome.refused.len() as u64;
                self.requeue_if_refused("we", outcome.refused.len());
            }
            self.moved += bytes;
            self.svc.throttle(self.moved, self.started).await;
        }
        Ok(())
    }

    /// Records that `by` (we, pulling, or the peer, pushed to) refused — most
    /// likely versions ahead of a clock not measured yet — leave this
    /// exchange incomplete: another one with the peer is queued rather than
    /// left to the next full pass. (A pass run while our own clock was
    /// unmeasured never ends a restarted node's wait for repair; see
    /// `RepairActor::start_pass`.)
    fn requeue_if_refused(&self, by: &str, refused: usize) {
        if refused == 0 {
            return;
        }
        log::warn!(
            "anti-entropy with {}: {by} refused {refused} records; another exchange is queued",
            self.peer
        );
        self.svc.core.local.repair_wanted.want(self.peer);
    }

    /// Sends our records of `keys` to the peer, in batches bounded in bytes.
    pub(super) async fn push(
        &mut self,
        keys: Vec<Bytes>,
        sum: &mut RunSummary,
    ) -> Result<(), SyncError> {
        let stats = &self.svc.core.local.stats;
        let budget = self.svc.budget();
        let max_value = self.svc.config.max_value;
        let mut rest = keys;
        while !rest.is_empty() {
            // Read only as many records as one batch carries.
            let store = self.svc.core.local.store.clone();
            let (page, taken, rest_back) = tokio::task::spawn_blocking(move || {
                let mut page = Vec::new();
                let (mut bytes, mut taken) = (0, 0);
                for k in &rest {
                    if page.len() >= BACKGROUND_BATCH_ITEMS {
                        break;
                    }
                    let found = match store.get(k) {
                        // A corrupt record is not pushed (and fails nothing).
                        Err(StoreError::Corrupt(e)) => {
                            log::error!(
                                "a corrupt record is left out of an anti-entropy push: {e}"
                            );
                            None
                        }
                        other => other?,
                    };
                    let Some(r) = found else {
                        taken += 1;
                        continue;
                    };
                    // A record over the value limit (stored before the
                    // limit was lowered) would make the peer refuse the
                    // whole batch, and so every exchange: it is left out.
                    if !within_value_limit(value_len(&r), max_value, "an anti-entropy push") {
                        taken += 1;
                        continue;
                    }
                    let size = record_wire_bytes(k.len(), value_len(&r));
                    if !page.is_empty() && bytes + size > budget {
                        break;
                    }
                    bytes += size;
                    taken += 1;
                    page.push((k.clone(), r));
                }
                Ok::<_, StoreError>((page, taken, rest))
            })
            .await
            .map_err(|e| SyncError::Protocol(format!("read task: {e}")))??;
            rest = rest_back;
            rest.drain(..taken);
            if page.is_empty() {
                continue;
            }
            let bytes: u64 = page
                .iter()
                .map(|(k, r)| (k.len() + value_len(r)) as u64)
                .sum();
            let n = page.len() as u64;
            let items = page
                .into_iter()
                .map(|(k, r)| (k, WireRecord::from(r)))
                .collect();
            match self
                .svc
                .call(self.peer, Request::WriteBatch { items })
                .await?
            {
                Response::Batch { refused, .. } => {
                    self.requeue_if_refused(self.peer, refused.len());
                }
                _ => {
                    return Err(SyncError::Protocol(
                        "unexpected answer to WriteBatch".into(),
                    ))
                }
            }
            sum.keys_pushed += n;
            sum.bytes += bytes;
            Metrics::add(&stats.ae_keys_pushed, n);
            Metrics::add(&stats.ae_bytes, bytes);
            self.moved += bytes;
            self.svc.throttle(self.moved, self.started).await;
        }
        Ok(())
    }
}

/// How many of `keys` (from the front) one `ReadMany` asks for: at most
/// [`MOVE_KEYS`] and what fits in `budget` bytes of request, at least one.
pub(super) fn request_prefix(keys: &[Bytes], budget: usize) -> usize {
    let mut bytes = 64usize;
    let mut n = 0;
    for k in keys.iter().take(MOVE_KEYS) {
        bytes += k.len() + 5;
        if bytes > budget && n > 0 {
            break;
        }
        n += 1;
    }
    n
}

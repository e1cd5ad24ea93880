//! The shared liveness table: each peer's status as this node's failure
//! detector sees it (the coordinator reads it on every request) and the
//! hint floor each peer last gossiped, dated on our monotonic clock
//! (tombstone GC reads the floors through [`effective_floor`]).

use super::failure::Status;
use std::collections::HashMap;
use std::sync::RwLock;

/// Liveness of every peer as this node's failure detector sees it, and the
/// hint floor each peer last gossiped (with our monotonic time when it
/// arrived: a wall clock stepped or not yet measured then cannot misdate
/// it). Shared with coordinators (which read liveness on every request)
/// and tombstone GC (which reads the floors).
#[derive(Debug, Default)]
pub struct Liveness(
    RwLock<HashMap<String, Status>>,
    RwLock<HashMap<String, (u64, u64)>>,
);

impl Liveness {
    /// Peers start `Up` so a fresh node routes to them until proven otherwise.
    pub fn new(peers: impl IntoIterator<Item = String>) -> Self {
        Liveness(
            RwLock::new(peers.into_iter().map(|p| (p, Status::Up)).collect()),
            RwLock::default(),
        )
    }

    pub fn status(&self, node: &str) -> Status {
        self.0
            .read()
            .expect("liveness lock")
            .get(node)
            .copied()
            .unwrap_or(Status::Up)
    }

    /// The lowest hint floor among `peers` (0 for a peer never heard from):
    /// no peer holds a hint with an older version. A floor says nothing of
    /// hints stored after it was reported, whose versions may be up to
    /// `in_flight_ms` older than the report ([`effective_floor`]), so a
    /// peer silent for long (down, cut off) holds GC back.
    /// `now_ms` is the cluster's time and `now_mono_ms` our monotonic time
    /// now: a report's cluster time is `now_ms` less its age.
    pub fn min_hint_floor<'a>(
        &self,
        peers: impl IntoIterator<Item = &'a str>,
        in_flight_ms: u64,
        now_ms: u64,
        now_mono_ms: u64,
    ) -> u64 {
        let floors = self.1.read().expect("floors lock");
        peers
            .into_iter()
            .map(|p| {
                floors.get(p).map_or(0, |&(floor, at_mono_ms)| {
                    let at_ms = now_ms.saturating_sub(now_mono_ms.saturating_sub(at_mono_ms));
                    effective_floor(floor, at_ms, in_flight_ms)
                })
            })
            .min()
            .unwrap_or(u64::MAX)
    }

    /// The hint floor `node` last gossiped (`None`: never heard from; GC
    /// then counts it as 0). `u64::MAX`: it holds no hints.
    pub fn reported_floor(&self, node: &str) -> Option<u64> {
        self.1
            .read()
            .expect("floors lock")
            .get(node)
            .map(|&(floor, _)| floor)
    }

    /// Our monotonic time when `node` last reported its hint floor.
    pub fn floor_reported_at(&self, node: &str) -> Option<u64> {
        self.1
            .read()
            .expect("floors lock")
            .get(node)
            .map(|&(_, at)| at)
    }

    /// Records `node`'s hint floor, reported at our monotonic `at_mono_ms`.
    pub fn set_floor(&self, node: &str, floor: u64, at_mono_ms: u64) {
        self.1
            .write()
            .expect("floors lock")
            .insert(node.to_string(), (floor, at_mono_ms));
    }

    pub fn is_down(&self, node: &str) -> bool {
        self.status(node) == Status::Down
    }

    pub(super) fn set(&self, node: &str, status: Status) -> Option<Status> {
        self.0
            .write()
            .expect("liveness lock")
            .insert(node.to_string(), status)
    }
}

/// What a hint floor `floor`, reported at cluster time `at_ms`, still
/// guarantees: no hint below it then, and none stored since with a version
/// older than `at_ms − in_flight_ms` (a write's hint lands at most that long
/// after its version was issued).
pub fn effective_floor(floor: u64, at_ms: u64, in_flight_ms: u64) -> u64 {
    floor.min(crate::version::pack(at_ms.saturating_sub(in_flight_ms), 0))
}

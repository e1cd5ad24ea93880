//! Peers an anti-entropy exchange is wanted with soon — their hints were
//! dropped at the bound, or they refused records an exchange moved — and
//! the wake-up of the repair actor that serves them. Whoever wants one
//! calls [`RepairWanted::want`]; the repair actor wakes on it (and when a
//! wanted peer comes back up), never on a timer polling the set. Bounded:
//! at most one entry per member, and never more than a cluster's members.

use crate::wire::MAX_MEMBERS;
use std::collections::BTreeSet;
use std::sync::Mutex;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct RepairWanted {
    peers: Mutex<BTreeSet<String>>,
    wake: Notify,
}

impl RepairWanted {
    /// Wants an exchange with `peer`, and wakes the repair actor. At most
    /// [`MAX_MEMBERS`] peers are held (a cluster has no more); a want
    /// beyond that is dropped with a warning, and the next full pass
    /// serves that peer anyway.
    pub fn want(&self, peer: &str) {
        {
            let mut set = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            if set.len() >= MAX_MEMBERS && !set.contains(peer) {
                log::warn!(
                    "an exchange with {peer} is not queued: {MAX_MEMBERS} peers already are; \
                     the next full pass serves it"
                );
                return;
            }
            set.insert(peer.to_string());
        }
        self.wake.notify_one();
    }

    /// Takes the wanted peers that `is_up`; the others stay wanted.
    pub fn take_up(&self, is_up: impl Fn(&str) -> bool) -> Vec<String> {
        let mut set = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let up: Vec<String> = set.iter().filter(|p| is_up(p)).cloned().collect();
        for p in &up {
            set.remove(p);
        }
        up
    }

    /// Whether an exchange with `peer` is wanted.
    pub fn contains(&self, peer: &str) -> bool {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(peer)
    }

    /// Resolves once something was wanted since the last wake-up.
    pub async fn woken(&self) {
        self.wake.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_want_wakes_the_server_even_when_it_came_first_and_down_peers_stay() {
        let w = RepairWanted::default();
        w.want("n2");
        w.want("n3");
        w.want("n2");
        // The wake-up is kept for a server that was not waiting yet.
        tokio::time::timeout(Duration::from_secs(1), w.woken())
            .await
            .expect("woken");
        assert_eq!(w.take_up(|p| p == "n2"), ["n2"]);
        assert!(w.contains("n3") && !w.contains("n2"));
        assert_eq!(w.take_up(|_| true), ["n3"]);
        assert!(w.take_up(|_| true).is_empty());
    }

    /// Second review of issue 16: the set is keyed by names that come from
    /// stored hints and peers; it holds no more than a cluster's members.
    #[test]
    fn the_wanted_set_is_bounded_by_the_member_limit() {
        let w = RepairWanted::default();
        for i in 0..MAX_MEMBERS + 50 {
            w.want(&format!("n{i}"));
        }
        w.want("n0");
        let all = w.take_up(|_| true);
        assert_eq!(all.len(), MAX_MEMBERS);
        assert!(!all.contains(&format!("n{MAX_MEMBERS}")));
    }
}

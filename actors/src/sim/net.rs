//! The simulated network: calls between in-process nodes over channels,
//! with scripted partitions. A call across a cut is lost (the caller times
//! out, not knowing whether it arrived); an answer whose way back was cut
//! meanwhile is lost too.

use crate::peer::{PeerError, Transport, TransportCall};
use crate::wire::{Request, Response};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A request delivered to a node: who sent it, and where the answer goes.
pub type Envelope = (String, Request, oneshot::Sender<Response>);

/// Requests a node may have queued (a bounded inbox, like a connection's).
pub const INBOX: usize = 1024;

#[derive(Default)]
pub struct SimNet {
    /// Node groups that can reach each other; `None`: everyone.
    groups: Mutex<Option<Vec<BTreeSet<String>>>>,
    inboxes: Mutex<HashMap<String, mpsc::Sender<Envelope>>>,
}

impl SimNet {
    /// Registers `node`'s inbox.
    pub fn attach(&self, node: &str, inbox: mpsc::Sender<Envelope>) {
        self.inboxes
            .lock()
            .expect("inboxes")
            .insert(node.to_string(), inbox);
    }

    /// Cuts the network into `groups`; nodes in none of them reach nobody.
    pub fn partition(&self, groups: Vec<BTreeSet<String>>) {
        *self.groups.lock().expect("groups") = Some(groups);
    }

    pub fn heal(&self) {
        *self.groups.lock().expect("groups") = None;
    }

    /// Whether `a` and `b` reach each other now.
    pub fn connected(&self, a: &str, b: &str) -> bool {
        match &*self.groups.lock().expect("groups") {
            None => true,
            Some(groups) => groups.iter().any(|g| g.contains(a) && g.contains(b)),
        }
    }

    /// The transport of node `from`.
    pub fn link(self: &Arc<Self>, from: &str) -> Arc<dyn Transport> {
        Arc::new(Link {
            from: from.to_string(),
            net: self.clone(),
        })
    }
}

struct Link {
    from: String,
    net: Arc<SimNet>,
}

impl Transport for Link {
    fn call(&self, node: &str, request: Request, timeout: Duration) -> TransportCall {
        let (from, to, net) = (self.from.clone(), node.to_string(), self.net.clone());
        Box::pin(async move {
            let lost = || PeerError::Timeout {
                peer: to.clone(),
                after_ms: timeout.as_millis() as u64,
                sent: true,
            };
            if !net.connected(&from, &to) {
                tokio::time::sleep(timeout).await;
                return Err(lost());
            }
            let inbox = net.inboxes.lock().expect("inboxes").get(&to).cloned();
            let Some(inbox) = inbox else {
                return Err(PeerError::NotConnected { peer: to.clone() });
            };
            let (tx, rx) = oneshot::channel();
            if inbox.try_send((from.clone(), request, tx)).is_err() {
                return Err(PeerError::Overloaded {
                    peer: to.clone(),
                    what: "simulated inbox",
                });
            }
            match tokio::time::timeout(timeout, rx).await {
                // The way back may have been cut while it was served.
                Ok(Ok(answer)) if net.connected(&from, &to) => Ok(answer),
                Ok(Ok(_)) => {
                    tokio::time::sleep(timeout).await;
                    Err(lost())
                }
                Ok(Err(_)) => Err(PeerError::ConnectionLost {
                    peer: to.clone(),
                    why: "the node stopped".into(),
                    sent: true,
                }),
                Err(_) => Err(lost()),
            }
        })
    }

    fn reachable(&self, node: &str) -> bool {
        self.net.connected(&self.from, node)
    }
}

//! The simulated network: calls between in-process nodes over channels,
//! with scripted partitions. A call across a cut is lost (the caller times
//! out, not knowing whether it arrived); an answer whose way back was cut
//! meanwhile is lost too.
//!
//! A link can also *hold* frames (of one kind, or all): they are neither
//! delivered nor lost, as a frame stuck in a connection's send queue while
//! the kernel retransmits. The caller times out meanwhile. On release a
//! held frame is delivered late — unless it has waited longer than
//! [`WRITE_STALL`], by when the sender has given the connection up and
//! closed it abortively, discarding what it had not delivered (the TCP
//! transport's contract: `SO_LINGER` 0 in `peer::handshake::tune`, tested
//! by `peer::tests::a_connection_given_up_on_delivers_nothing_later`).

use super::clock::Advance;
use crate::peer::{PeerError, Transport, TransportCall, WRITE_STALL};
use crate::wire::{Request, Response};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A request delivered to a node: who sent it, and where the answer goes.
pub type Envelope = (String, Request, oneshot::Sender<Response>);

/// Requests a node may have queued (a bounded inbox, like a connection's).
pub const INBOX: usize = 1024;

/// Frames from `from` to `to` (of `kind` only, when given) are held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub from: String,
    pub to: String,
    pub kind: Option<String>,
}

impl Hold {
    fn matches(&self, from: &str, to: &str, request: &Request) -> bool {
        self.from == from && self.to == to && self.kind.as_ref().is_none_or(|k| k == request.kind())
    }
}

/// A frame held on its link, sent at `sent_ms` of simulated time (the
/// time `advance` has moved, real time not counted).
struct Held {
    from: String,
    to: String,
    sent_ms: u64,
    envelope: Envelope,
}

/// What releasing a link did with the frames it held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Released {
    pub delivered: usize,
    /// Held longer than [`WRITE_STALL`]: discarded with their connection.
    pub discarded: usize,
}

pub struct SimNet {
    /// Node groups that can reach each other; `None`: everyone.
    groups: Mutex<Option<Vec<BTreeSet<String>>>>,
    inboxes: Mutex<HashMap<String, mpsc::Sender<Envelope>>>,
    holds: Mutex<Vec<Hold>>,
    held: Mutex<Vec<Held>>,
    /// Links whose calls fail at once (a connection reset each time).
    resets: Mutex<BTreeSet<(String, String)>>,
    advance: Advance,
}

impl SimNet {
    /// A network whose simulated time moves with `advance`.
    pub fn new(advance: Advance) -> SimNet {
        SimNet {
            groups: Mutex::default(),
            inboxes: Mutex::default(),
            holds: Mutex::default(),
            held: Mutex::default(),
            resets: Mutex::default(),
            advance,
        }
    }

    /// Simulated time only: a held frame ages by `advance`, never by how
    /// long the machine took between two script lines (which would make a
    /// script's outcome depend on the machine's load).
    fn now_ms(&self) -> u64 {
        self.advance.ms()
    }

    /// The node stopped: calls to it find nobody.
    pub fn detach(&self, node: &str) {
        self.inboxes.lock().expect("inboxes").remove(node);
    }

    /// Calls `from` → `to` fail at once, as on a connection reset.
    pub fn reset(&self, from: &str, to: &str) {
        self.resets
            .lock()
            .expect("resets")
            .insert((from.to_string(), to.to_string()));
    }

    pub fn hold(&self, hold: Hold) {
        self.holds.lock().expect("holds").push(hold);
    }

    /// How many frames `from` → `to` are held now.
    pub fn held(&self, from: &str, to: &str) -> usize {
        let held = self.held.lock().expect("held");
        held.iter().filter(|h| h.from == from && h.to == to).count()
    }

    /// Ends the holds of `from` → `to`; delivers what they held, except
    /// frames held longer than [`WRITE_STALL`].
    pub fn release(&self, from: &str, to: &str) -> Released {
        self.holds
            .lock()
            .expect("holds")
            .retain(|h| !(h.from == from && h.to == to));
        let frames: Vec<Held> = {
            let mut held = self.held.lock().expect("held");
            let (mine, rest) = std::mem::take(&mut *held)
                .into_iter()
                .partition(|h| h.from == from && h.to == to);
            *held = rest;
            mine
        };
        let now = self.now_ms();
        let stall = WRITE_STALL.as_millis() as u64;
        let mut out = Released::default();
        for h in frames {
            let inbox = self.inboxes.lock().expect("inboxes").get(&h.to).cloned();
            match inbox {
                Some(inbox) if now.saturating_sub(h.sent_ms) < stall => {
                    if inbox.try_send(h.envelope).is_ok() {
                        out.delivered += 1;
                    }
                }
                _ => out.discarded += 1,
            }
        }
        out
    }

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
            let reset = net
                .resets
                .lock()
                .expect("resets")
                .contains(&(from.clone(), to.clone()));
            if reset {
                return Err(PeerError::ConnectionLost {
                    peer: to.clone(),
                    why: "reset by the simulated network".into(),
                    sent: false,
                });
            }
            if !net.connected(&from, &to) {
                tokio::time::sleep(timeout).await;
                return Err(lost());
            }
            let inbox = net.inboxes.lock().expect("inboxes").get(&to).cloned();
            let Some(inbox) = inbox else {
                return Err(PeerError::NotConnected { peer: to.clone() });
            };
            let (tx, rx) = oneshot::channel();
            let holds = net.holds.lock().expect("holds").clone();
            if holds.iter().any(|h| h.matches(&from, &to, &request)) {
                net.held.lock().expect("held").push(Held {
                    from: from.clone(),
                    to: to.clone(),
                    sent_ms: net.now_ms(),
                    envelope: (from.clone(), request, tx),
                });
            } else if inbox.try_send((from.clone(), request, tx)).is_err() {
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

//! A fake member: the test process plays member `i` of a cluster (whose
//! node is not running) by listening at that member's peer address with its
//! real certificate, the way a compromised member would. The nodes dial it
//! as usual; it answers their hellos, answers gossip with a plausible entry
//! of its own (its wall clock is the test's, so the nodes vouch for their
//! clocks against it), and answers everything else as the test says — by
//! default as an empty, obliging replica (reads find nothing, writes
//! apply).
//!
//! Each accepted connection is served on its own thread until the node
//! closes it; the listener stops when the [`FakeMember`] is dropped.

use crate::harness::Cluster;
use crate::hostile::{hello, Raw};
use crate::peer_conn::{certs_of, PeerConn};
use ringkv_actors::wire::{ErrorCode, Frame, MemberState, Request, Response};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the test answers a request with; `None`: the default answer.
pub type Answer = dyn Fn(&Request) -> Option<Response> + Send + Sync;

pub struct FakeMember {
    stop: Arc<AtomicBool>,
    listener: Option<JoinHandle<()>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl FakeMember {
    /// Plays member `index` of `c` (not running): listens at its peer
    /// address, answering requests with `answer` first.
    pub fn start(
        c: &Cluster,
        index: usize,
        answer: impl Fn(&Request) -> Option<Response> + Send + Sync + 'static,
    ) -> FakeMember {
        let node = c.node(index);
        let listener = TcpListener::bind(node.peer_addr)
            .unwrap_or_else(|e| panic!("listen at {}: {e}", node.peer_addr));
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let me = Arc::new(Me {
            entry: MemberState {
                id: node.id.clone(),
                http_addr: node.http_addr.to_string(),
                peer_addr: node.peer_addr.to_string(),
                generation: now_ms(),
                heartbeat: 0,
                wall_ms: 0,
                ring_epoch: 0,
                hints_floor: u64::MAX,
                hlc_ts: 0,
            },
            heartbeat: AtomicU64::new(0),
            answer: Box::new(answer),
        });
        let (certs, id) = (certs_of(c), node.id.clone());
        let stopped = stop.clone();
        let listener = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).expect("blocking");
                        // No read timeout: a connection ends when the node
                        // closes it (at the latest when the test kills it).
                        let raw = Raw::over(PeerConn::accept(s, certs.as_deref(), &id));
                        let me = me.clone();
                        std::thread::spawn(move || me.serve(raw));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        FakeMember {
            stop,
            listener: Some(listener),
        }
    }
}

impl Drop for FakeMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
    }
}

/// The member played, shared by its connections.
struct Me {
    entry: MemberState,
    heartbeat: AtomicU64,
    answer: Box<Answer>,
}

impl Me {
    /// One connection a node dialed: hellos, then requests until it closes.
    fn serve(&self, mut raw: Raw) {
        if !matches!(raw.next(), Some(Frame::Hello(_))) {
            return;
        }
        if raw.send(&Frame::Hello(hello(&self.entry.id))).is_err() {
            return;
        }
        loop {
            match raw.next() {
                Some(Frame::Request { id, body }) => {
                    let body = (self.answer)(&body).unwrap_or_else(|| self.default(&body));
                    if raw.send(&Frame::Response { id, body }).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    fn default(&self, request: &Request) -> Response {
        match request {
            Request::Gossip { .. } => {
                let mut entry = self.entry.clone();
                entry.heartbeat = self.heartbeat.fetch_add(1, Ordering::Relaxed) + 1;
                entry.wall_ms = now_ms();
                Response::Gossip {
                    members: vec![entry],
                }
            }
            Request::Read { .. } => Response::Read { record: None },
            Request::Write { .. } => Response::Write {
                applied: true,
                replaced_live: false,
                superseded: None,
                superseded_tombstone: false,
            },
            other => Response::error(
                ErrorCode::Internal,
                format!("a fake member does not answer {}", other.kind()),
            ),
        }
    }
}

//! The answering side: a listener that serves peer connections and hands
//! every request to one [`Dispatch`].
//!
//! Each accepted connection becomes a session. A session must send a hello
//! within [`HELLO_TIMEOUT`], in a frame of at most `HELLO_MAX_FRAME` bytes,
//! naming this cluster, this protocol and a configured member other than us;
//! otherwise it is closed. Then every request is validated
//! ([`Request::validate`]) and dispatched concurrently; answers go back with
//! the request's id, in any order.
//!
//! Bounds, so no peer — slow, broken or hostile — can exhaust the node:
//! * at most [`MAX_SESSIONS`] sessions; a connection beyond is closed at once;
//!   at most [`MAX_SESSIONS_PER_MEMBER`] per member id (a newer one closes
//!   the oldest, so a member that reconnects is never locked out);
//! * per session, at most [`MAX_SESSION_IN_FLIGHT`] requests and
//!   `session_request_bytes` of request frames in flight, and node-wide
//!   `node_request_bytes`: past them the session stops reading its socket
//!   (back pressure), it does not buffer;
//! * per session, at most `session_response_bytes` of answers waiting to be
//!   written; a peer that stops reading is closed after [`WRITE_STALL`];
//! * an answer that would not fit in a frame is replaced by an error answer,
//!   never sent oversized and never the cause of a closed connection.
//!
//! Everything here runs on one arbiter (the peer thread), hence `Rc`.

use super::client::write_stalling;
use super::handshake::{accept, tune, FrameReader, FrameWriter};
use super::{PeerSettings, MAX_SESSIONS, MAX_SESSIONS_PER_MEMBER, MAX_SESSION_IN_FLIGHT};
use crate::wire::{encode_frame, CodecError, ErrorCode, Frame, Received, Request, Response};
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Whoever answers peers' requests (the node's inbound dispatcher).
pub trait Dispatch: 'static {
    /// Answers one validated request from member `from`.
    fn dispatch(&self, from: Rc<str>, request: Request) -> LocalBoxFuture<'static, Response>;
}

/// Refused connections logged at warning level per second at most (the
/// rest at debug level, counted in the next warning).
const REFUSALS_LOGGED_PER_SECOND: u32 = 20;
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Per member id: its sessions (number, and the switch that closes it).
type SessionsByMember = HashMap<String, VecDeque<(u64, oneshot::Sender<()>)>>;

struct Shared {
    settings: Arc<PeerSettings>,
    dispatch: Rc<dyn Dispatch>,
    sessions: Arc<Semaphore>,
    node_bytes: Arc<Semaphore>,
    by_member: RefCell<SessionsByMember>,
    next_session: Cell<u64>,
    /// Start of the current one-second window, refusals logged in it, and
    /// refusals not logged since the last warning.
    refusals: Cell<(Option<Instant>, u32, u64)>,
}

/// Serves peers on a bound listener.
pub struct PeerServer {
    shared: Rc<Shared>,
}

impl PeerServer {
    pub fn new(settings: Arc<PeerSettings>, dispatch: Rc<dyn Dispatch>) -> Self {
        let node_bytes = Arc::new(Semaphore::new(settings.node_request_bytes()));
        PeerServer {
            shared: Rc::new(Shared {
                settings,
                dispatch,
                sessions: Arc::new(Semaphore::new(MAX_SESSIONS)),
                node_bytes,
                by_member: RefCell::default(),
                next_session: Cell::new(1),
                refusals: Cell::new((None, 0, 0)),
            }),
        }
    }

    /// Accepts connections until the arbiter stops. Must run on a local set
    /// (an actix arbiter): sessions are spawned locally.
    pub async fn run(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, from)) => {
                    let Ok(permit) = self.shared.sessions.clone().try_acquire_owned() else {
                        self.shared.refused(from, "too many peer sessions");
                        continue;
                    };
                    tune(&stream);
                    let shared = self.shared.clone();
                    tokio::task::spawn_local(async move {
                        session(shared, Box::new(stream), from).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    log::warn!("accepting a peer connection failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

impl Shared {
    /// Logs a refused connection; a flood is logged at warning level only
    /// [`REFUSALS_LOGGED_PER_SECOND`] times a second.
    fn refused(&self, from: SocketAddr, why: &str) {
        let now = Instant::now();
        let (window, mut logged, mut quiet) = self.refusals.get();
        if window.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            self.refusals.set((Some(now), 0, quiet));
            logged = 0;
        }
        let window = self.refusals.get().0;
        if logged < REFUSALS_LOGGED_PER_SECOND {
            if quiet > 0 {
                log::warn!("refused a peer connection from {from}: {why} ({quiet} more refused)");
                quiet = 0;
            } else {
                log::warn!("refused a peer connection from {from}: {why}");
            }
            self.refusals.set((window, logged + 1, quiet));
        } else {
            log::debug!("refused a peer connection from {from}: {why}");
            self.refusals.set((window, logged, quiet + 1));
        }
    }

    /// Records a session of `member`; closes its oldest beyond the cap.
    fn register(&self, member: &str, kill: oneshot::Sender<()>) -> u64 {
        let id = self.next_session.get();
        self.next_session.set(id + 1);
        let mut map = self.by_member.borrow_mut();
        let list = map.entry(member.to_string()).or_default();
        list.push_back((id, kill));
        while list.len() > MAX_SESSIONS_PER_MEMBER {
            if let Some((_, old)) = list.pop_front() {
                let _ = old.send(());
            }
        }
        id
    }

    fn unregister(&self, member: &str, id: u64) {
        let mut map = self.by_member.borrow_mut();
        if let Some(list) = map.get_mut(member) {
            list.retain(|(i, _)| *i != id);
            if list.is_empty() {
                map.remove(member);
            }
        }
    }
}

/// Why a session ended when the peer closed it between frames (not an error).
const CLEAN_CLOSE: &str = "closed by the peer";

/// Budgets of one session, shared with its request handlers.
struct Budgets {
    in_flight: Arc<Semaphore>,
    request_bytes: Arc<Semaphore>,
    response_bytes: Arc<Semaphore>,
    /// What `response_bytes` was created with: an answer never asks for more.
    response_total: usize,
}

async fn session(shared: Rc<Shared>, stream: super::handshake::PeerStream, addr: SocketAddr) {
    let (from, reader, writer) = match accept(stream, &shared.settings).await {
        Ok(x) => x,
        Err(why) => return shared.refused(addr, &why),
    };
    let (kill_tx, kill_rx) = oneshot::channel();
    let id = shared.register(&from, kill_tx);
    log::debug!("peer session from {from} at {addr} opened");
    let budgets = Rc::new(Budgets {
        in_flight: Arc::new(Semaphore::new(MAX_SESSION_IN_FLIGHT)),
        request_bytes: Arc::new(Semaphore::new(shared.settings.session_request_bytes())),
        response_bytes: Arc::new(Semaphore::new(shared.settings.session_response_bytes())),
        response_total: shared.settings.session_response_bytes(),
    });
    let (out_tx, out_rx) = mpsc::channel(MAX_SESSION_IN_FLIGHT);
    let from: Rc<str> = Rc::from(from.as_str());
    let why = tokio::select! {
        why = read_requests(&shared, &budgets, from.clone(), reader, out_tx) => why,
        why = write_responses(writer, out_rx) => why,
        _ = kill_rx => "replaced by a newer session of the same member".to_string(),
    };
    // Handlers still running find the session gone and drop their answers.
    budgets.response_bytes.close();
    shared.unregister(&from, id);
    if why == CLEAN_CLOSE {
        log::info!("peer session from {from} ({addr}) closed: {why}");
    } else {
        log::warn!("peer session from {from} ({addr}) closed: {why}");
    }
}

fn permits(len: usize, budget: usize) -> u32 {
    len.clamp(1, budget).min(u32::MAX as usize) as u32
}

async fn read_requests(
    shared: &Rc<Shared>,
    budgets: &Rc<Budgets>,
    from: Rc<str>,
    mut reader: FrameReader,
    out: mpsc::Sender<(Bytes, OwnedSemaphorePermit)>,
) -> String {
    let settings = &shared.settings;
    loop {
        let (id, body, len) = match reader.next().await {
            None => return CLEAN_CLOSE.into(),
            Some(Err(e)) => return e.to_string(),
            Some(Ok(Received {
                frame: Frame::Request { id, body },
                len,
            })) => (id, body, len),
            Some(Ok(_)) => return "the peer sent a frame other than a request".into(),
        };
        // Back pressure: wait for room before reading the next frame.
        let Ok(slot) = budgets.in_flight.clone().acquire_owned().await else {
            return "session closed".into();
        };
        let Ok(session_bytes) = budgets
            .request_bytes
            .clone()
            .acquire_many_owned(permits(len, settings.session_request_bytes()))
            .await
        else {
            return "session closed".into();
        };
        let Ok(node_bytes) = shared
            .node_bytes
            .clone()
            .acquire_many_owned(permits(len, settings.node_request_bytes()))
            .await
        else {
            return "node closing".into();
        };
        let invalid = body.validate(settings.max_value).err();
        let kind = body.kind();
        let dispatch = shared.dispatch.clone();
        let (from, budgets, out, max) = (
            from.clone(),
            budgets.clone(),
            out.clone(),
            settings.max_frame,
        );
        tokio::task::spawn_local(async move {
            let response = match invalid {
                Some(why) => {
                    log::warn!("refused a {kind} request from {from}: {why}");
                    Response::error(ErrorCode::Invalid, why)
                }
                None => dispatch.dispatch(from.clone(), body).await,
            };
            drop((session_bytes, node_bytes));
            let bytes = encode_response(id, response, max, &from, kind);
            let budget = permits(bytes.len(), budgets.response_total);
            let Ok(permit) = budgets
                .response_bytes
                .clone()
                .acquire_many_owned(budget)
                .await
            else {
                return;
            };
            let _ = out.send((bytes, permit)).await;
            drop(slot);
        });
    }
}

/// Encodes an answer; one that would exceed the frame limit (a bug: every
/// answer is sized before it is built) becomes an error answer instead.
fn encode_response(id: u64, body: Response, max: usize, from: &str, kind: &str) -> Bytes {
    match encode_frame(&Frame::Response { id, body }, max) {
        Ok(b) => b,
        Err(e) => {
            let why = match e {
                CodecError::TooLarge { len, max } => {
                    format!("the answer of {len} bytes exceeds the {max}-byte frame limit")
                }
                other => other.to_string(),
            };
            log::error!("cannot answer a {kind} request from {from}: {why}");
            encode_frame(
                &Frame::Response {
                    id,
                    body: Response::error(ErrorCode::Internal, why),
                },
                max,
            )
            .expect("a short error answer fits in any frame")
        }
    }
}

async fn write_responses(
    mut writer: FrameWriter,
    mut rx: mpsc::Receiver<(Bytes, OwnedSemaphorePermit)>,
) -> String {
    while let Some((bytes, _permit)) = rx.recv().await {
        if let Err(why) = write_stalling(&mut writer, &bytes).await {
            return why;
        }
    }
    "session closed".into()
}

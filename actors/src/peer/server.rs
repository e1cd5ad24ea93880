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
//! * at most [`MAX_HANDSHAKES`] connections still in their hello, and at
//!   most [`MAX_SESSIONS`] in all; a connection beyond either is closed at
//!   once; at most [`MAX_SESSIONS_PER_MEMBER`] per member id (a newer one
//!   closes the oldest, so a member that reconnects is never locked out);
//! * a request frame's bytes are reserved from the budgets below as soon as
//!   its 4-byte length is read, before its body is read or any memory is set
//!   aside for it;
//! * per session, at most [`MAX_SESSION_IN_FLIGHT`] requests and
//!   `session_request_bytes` of request frames in flight, and node-wide
//!   `node_request_bytes`: past them the session stops reading its socket
//!   (back pressure), it does not buffer;
//! * answers are bounded before they exist: each request reserves its
//!   answer's worst case ([`Request::max_response_bytes`]) from the session's
//!   and the node's answer budgets before it is served, and keeps it until
//!   the answer is written, so a peer that stops reading stops being served
//!   once its budget is held; it is closed after [`super::WRITE_STALL`];
//! * an answer that would not fit in a frame is replaced by an error answer,
//!   never sent oversized and never the cause of a closed connection.
//!
//! Everything here runs on one arbiter (the peer thread), hence `Rc`.

use super::client::{write_stalling, Coalesced};
use super::handshake::{accept, admissible, revalidate, tune, FrameReader, FrameWriter};
use super::{
    PeerSettings, MAX_HANDSHAKES, MAX_SESSIONS, MAX_SESSIONS_PER_MEMBER, MAX_SESSION_IN_FLIGHT,
};
use crate::wire::{
    decode_body, encode_frame, gossip_answer_bytes, CodecError, ErrorCode, Frame, Request, Response,
};
use bytes::Bytes;
use bytes::{Buf, BytesMut};
use futures_util::future::LocalBoxFuture;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, ReadHalf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Whoever answers peers' requests (the node's inbound dispatcher).
pub trait Dispatch: 'static {
    /// Answers one validated request from member `from`.
    fn dispatch(&self, from: Rc<str>, request: Request) -> LocalBoxFuture<'static, Response>;
}

/// Bytes read from a socket at a time, at most.
const READ_CHUNK: usize = 64 << 10;
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
    handshakes: Arc<Semaphore>,
    node_bytes: Arc<Semaphore>,
    node_answers: Arc<Semaphore>,
    by_member: RefCell<SessionsByMember>,
    /// Handshakes in progress per source IP (entries live only while one
    /// does: at most [`MAX_HANDSHAKES`]).
    hellos_by_ip: RefCell<HashMap<IpAddr, usize>>,
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
        let node_answers = Arc::new(Semaphore::new(settings.node_response_bytes()));
        PeerServer {
            shared: Rc::new(Shared {
                settings,
                dispatch,
                sessions: Arc::new(Semaphore::new(MAX_SESSIONS)),
                handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
                node_bytes,
                node_answers,
                by_member: RefCell::default(),
                hellos_by_ip: RefCell::default(),
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
                    let per_ip = match admissible(&self.shared.settings, from) {
                        Ok(n) => n,
                        Err(why) => {
                            self.shared.refused(from, &why);
                            continue;
                        }
                    };
                    let Some(slot) = IpSlot::take(&self.shared, from, per_ip) else {
                        self.shared
                            .refused(from, "too many hellos in progress from its address");
                        continue;
                    };
                    let Ok(hello) = self.shared.handshakes.clone().try_acquire_owned() else {
                        self.shared.refused(from, "too many hellos in progress");
                        continue;
                    };
                    tune(&stream);
                    let shared = self.shared.clone();
                    tokio::task::spawn_local(async move {
                        session(shared, stream, from, (hello, slot)).await;
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

/// A handshake in progress from one IP; counted until dropped.
struct IpSlot {
    shared: Rc<Shared>,
    ip: IpAddr,
}

impl IpSlot {
    /// A slot for `from`, unless its IP already has `cap` handshakes going.
    fn take(shared: &Rc<Shared>, from: SocketAddr, cap: usize) -> Option<IpSlot> {
        let ip = from.ip().to_canonical();
        let mut map = shared.hellos_by_ip.borrow_mut();
        let n = map.entry(ip).or_default();
        if *n >= cap {
            if *n == 0 {
                map.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(IpSlot {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.shared.hellos_by_ip.borrow_mut();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
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

async fn session(
    shared: Rc<Shared>,
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    hello: (OwnedSemaphorePermit, IpSlot),
) {
    let accepted = accept(stream, addr, &shared.settings).await;
    drop(hello);
    let (from, reader, writer, chain) = match accepted {
        Ok(x) => x,
        Err(why) => return shared.refused(addr, &why),
    };
    let reader = RequestReader::new(reader, shared.settings.max_frame);
    let (kill_tx, kill_rx) = oneshot::channel();
    let id = shared.register(&from, kill_tx);
    log::debug!("peer session from {from} at {addr} opened");
    let budgets = Rc::new(Budgets {
        in_flight: Arc::new(Semaphore::new(MAX_SESSION_IN_FLIGHT)),
        request_bytes: Arc::new(Semaphore::new(shared.settings.session_request_bytes())),
        response_bytes: Arc::new(Semaphore::new(shared.settings.session_response_bytes())),
        response_total: shared.settings.session_response_bytes(),
    });
    let (out_tx, out_rx) = mpsc::channel::<Answer>(MAX_SESSION_IN_FLIGHT);
    let from: Rc<str> = Rc::from(from.as_str());
    let why = tokio::select! {
        why = read_requests(&shared, &budgets, from.clone(), reader, out_tx) => why,
        why = write_responses(writer, out_rx) => why,
        why = revalidate(&shared.settings, &from, chain) => why,
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

/// An encoded answer and the budget it holds until it is written.
type Answer = (Bytes, [OwnedSemaphorePermit; 2]);

/// Reads request frames one at a time: the length first, then — once the
/// caller reserved room for it — exactly that many bytes.
struct RequestReader {
    io: ReadHalf<super::handshake::PeerStream>,
    buf: BytesMut,
    max: usize,
}

impl RequestReader {
    /// Takes over the hello reader, with anything it had already buffered.
    fn new(reader: FrameReader, max: usize) -> Self {
        let parts = reader.into_parts();
        RequestReader {
            io: parts.io,
            buf: parts.read_buf,
            max,
        }
    }

    /// Reads until `n` bytes are buffered; `false` at the end of the stream.
    async fn fill(&mut self, n: usize) -> std::io::Result<bool> {
        while self.buf.len() < n {
            self.buf.reserve((n - self.buf.len()).min(READ_CHUNK));
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                // TLS without close_notify: the same as TCP's end of stream
                // (frames carry their length, so a cut frame is still seen).
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The next frame's length; `None` on a clean end between frames.
    async fn length(&mut self) -> Result<Option<usize>, String> {
        if !self.fill(4).await.map_err(|e| e.to_string())? {
            return if self.buf.is_empty() {
                Ok(None)
            } else {
                Err("closed in the middle of a frame".into())
            };
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.max {
            return Err(format!(
                "frame of {len} bytes exceeds the {}-byte limit",
                self.max
            ));
        }
        Ok(Some(len))
    }

    /// The frame whose length [`RequestReader::length`] answered.
    async fn frame(&mut self, len: usize) -> Result<Frame, String> {
        if !self.fill(4 + len).await.map_err(|e| e.to_string())? {
            return Err("closed in the middle of a frame".into());
        }
        self.buf.advance(4);
        let body = self.buf.split_to(len);
        decode_body(&body).map_err(|e| e.to_string())
    }
}

async fn read_requests(
    shared: &Rc<Shared>,
    budgets: &Rc<Budgets>,
    from: Rc<str>,
    mut reader: RequestReader,
    out: mpsc::Sender<Answer>,
) -> String {
    let settings = &shared.settings;
    loop {
        let len = match reader.length().await {
            Ok(Some(len)) => len,
            Ok(None) => return CLEAN_CLOSE.into(),
            Err(why) => return why,
        };
        // Back pressure: wait for room before reading the frame's body.
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
        let (id, body) = match reader.frame(len).await {
            Ok(Frame::Request { id, body }) => (id, body),
            Ok(_) => return "the peer sent a frame other than a request".into(),
            Err(why) => return why,
        };
        // The answer's worst case, reserved before the request is served.
        let page = crate::limits::batch_budget(settings.max_frame);
        let worst = match body {
            // Our answer carries the configured members only.
            Request::Gossip { .. } => gossip_answer_bytes(settings.members.len()) + 1024,
            _ => body.max_response_bytes(settings.max_value, page),
        };
        let Ok(answer_bytes) = budgets
            .response_bytes
            .clone()
            .acquire_many_owned(permits(worst, budgets.response_total))
            .await
        else {
            return "session closed".into();
        };
        let Ok(node_answer_bytes) = shared
            .node_answers
            .clone()
            .acquire_many_owned(permits(worst, settings.node_response_bytes()))
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
            if bytes.len() > worst {
                log::error!(
                    "a {kind} answer of {} bytes exceeds its reserved {worst} bytes",
                    bytes.len()
                );
            }
            if budgets.response_bytes.is_closed() {
                return;
            }
            let _ = out.send((bytes, [answer_bytes, node_answer_bytes])).await;
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

async fn write_responses(mut writer: FrameWriter, mut rx: mpsc::Receiver<Answer>) -> String {
    while let Some((bytes, permit)) = rx.recv().await {
        // Answers ready together share a write; their reservations are held
        // until it is done.
        let mut held = vec![permit];
        let mut batch = Coalesced::new(bytes);
        while batch.wants_more() {
            match rx.try_recv() {
                Ok((more, permit)) => {
                    batch.push(&more);
                    held.push(permit);
                }
                Err(_) => break,
            }
        }
        if let Err(why) = write_stalling(&mut writer, batch.bytes()).await {
            return why;
        }
        drop(held);
    }
    "session closed".into()
}

//! The calling side: one [`PeerClient`] per remote node, and the [`Peers`]
//! registry that every caller in the node uses.
//!
//! A client keeps one connection to its node, redialed with exponential
//! backoff ([`MIN_BACKOFF`]..[`MAX_BACKOFF`]) whenever it is lost. A call
//! encodes its request in the caller's task (an encoding failure or an
//! oversized frame is the caller's error; the connection never sees it),
//! queues the bytes under a lock, and waits for the answer matched by request
//! id, up to its deadline. Nothing in the client ever waits without a bound:
//!
//! * not connected, a full queue or too many calls pending: the call fails at
//!   once and certainly was not sent;
//! * no answer by the deadline: the call fails with `Timeout`; if its frame
//!   was still queued it is withdrawn (certainly not sent), otherwise its
//!   answer is dropped when it comes;
//! * the connection breaks (read error, end of stream, a write that makes no
//!   progress for [`WRITE_STALL`], or foreground calls unanswered for
//!   [`SILENCE_LIMIT`] while nothing arrives that answers a call of ours —
//!   one still waiting, or one of the last [`MAX_GIVEN_UP`] written on this
//!   connection and given up on (a slow peer is alive; frames answering ids
//!   we never wrote do not count): every call waiting on it fails at once,
//!   queued frames are dropped, and the client redials.
//!
//! Background requests ([`Request::is_background`]) wait in their own queue
//! and go out at most [`MAX_BACKGROUND_IN_FLIGHT`] at a time, while client
//! requests are written as soon as the socket takes them: a client request
//! waits behind at most that many background frames, which are bounded in
//! bytes by their senders.
//!
//! The connection runs as one task (reader, writer and watchdog joined with
//! `select!`): when any of them ends, the others are dropped with it, so a
//! broken connection can never leave a writer looping or a call waiting.

use super::handshake::{self, dial, revalidate, FrameReader, FrameWriter};
use super::{
    PeerError, PeerSettings, MAX_BACKGROUND_IN_FLIGHT, MAX_BACKOFF, MAX_GIVEN_UP,
    MAX_PENDING_CALLS, MAX_QUEUED_BACKGROUND, MIN_BACKOFF, SILENCE_LIMIT, WRITE_STALL,
};
use crate::wire::{encode_frame, CodecError, Frame, Received, Request, RequestId, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, Notify};

/// How often the watchdog looks for a silent connection.
const WATCHDOG_INTERVAL: Duration = Duration::from_millis(500);
/// Frames are written in pieces of this size, each within [`WRITE_STALL`].
const WRITE_CHUNK: usize = 256 << 10;
/// Frames queued together are written in one go up to this many bytes (one
/// syscall, and one packet with TCP_NODELAY, instead of one per frame).
pub(crate) const COALESCE_BYTES: usize = 64 << 10;

type Reply = oneshot::Sender<Result<Response, PeerError>>;

struct Pending {
    reply: Reply,
    background: bool,
    /// When the frame was handed to the socket; `None` while queued.
    written: Option<Instant>,
}

struct Outgoing {
    id: RequestId,
    bytes: Bytes,
}

struct LinkState {
    /// The current connection's number; 0 while not connected.
    conn: u64,
    opened: u64,
    pending: HashMap<RequestId, Pending>,
    foreground: VecDeque<Outgoing>,
    foreground_bytes: usize,
    background: VecDeque<Outgoing>,
    background_in_flight: usize,
    /// When an answer to a call of ours last arrived.
    last_rx: Instant,
    /// Calls written on this connection and given up on, newest last (at
    /// most [`MAX_GIVEN_UP`]): a late answer to one is a sign of life.
    given_up: VecDeque<RequestId>,
    /// When the first foreground frame written since such an answer last
    /// arrived went out (the watchdog's measure of silence).
    unanswered_since: Option<Instant>,
}

/// The shared state of one remote node's connection.
struct Link {
    node: String,
    addr: SocketAddr,
    settings: Arc<PeerSettings>,
    connected: Arc<AtomicBool>,
    next_id: AtomicU64,
    state: Mutex<LinkState>,
    /// Wakes the writer when a frame was queued or a background slot freed.
    wake: Notify,
    stopping: AtomicBool,
    stop: Notify,
    /// Cuts the redial backoff short (the peer was just heard from).
    redial: Notify,
}

/// The client of one remote node. Cheap to clone.
#[derive(Clone)]
pub struct PeerClient {
    link: Arc<Link>,
}

impl PeerClient {
    /// A client of `node` at `addr`, and the future that keeps its connection
    /// (spawn it on the runtime that should run the socket). `connected`
    /// follows the connection's state.
    pub fn new(
        node: String,
        addr: SocketAddr,
        settings: Arc<PeerSettings>,
        connected: Arc<AtomicBool>,
    ) -> (PeerClient, impl Future<Output = ()> + Send + 'static) {
        let link = Arc::new(Link {
            node,
            addr,
            settings,
            connected,
            next_id: AtomicU64::new(1),
            state: Mutex::new(LinkState {
                conn: 0,
                opened: 0,
                pending: HashMap::new(),
                foreground: VecDeque::new(),
                foreground_bytes: 0,
                background: VecDeque::new(),
                background_in_flight: 0,
                last_rx: Instant::now(),
                given_up: VecDeque::new(),
                unanswered_since: None,
            }),
            wake: Notify::new(),
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
            redial: Notify::new(),
        });
        (PeerClient { link: link.clone() }, run(link))
    }

    pub fn node(&self) -> &str {
        &self.link.node
    }

    pub fn is_connected(&self) -> bool {
        self.link.connected.load(Ordering::Relaxed)
    }

    /// Calls waiting for an answer now (for tests and status).
    pub fn pending_calls(&self) -> usize {
        self.link.lock().pending.len()
    }

    /// Closes the connection for good and fails everything waiting.
    /// The peer showed it is up (it opened a session to us): when not
    /// connected, dial now instead of at the end of the backoff.
    pub fn redial_now(&self) {
        if !self.is_connected() {
            self.link.redial.notify_one();
        }
    }

    pub fn shutdown(&self) {
        self.link.stopping.store(true, Ordering::Relaxed);
        self.link.stop.notify_waiters();
        self.link.stop.notify_one();
    }

    /// Sends `request` and waits for its answer, at most `timeout`. A
    /// `Response::Error` from the peer comes back as [`PeerError::Remote`].
    pub async fn call(&self, request: Request, timeout: Duration) -> Result<Response, PeerError> {
        let link = &self.link;
        let delay = link.settings.faults.peer_delay();
        if !delay.is_zero() {
            // Test-only latency on this node's links (the kernel here has no
            // netem): the call waits before it is sent.
            tokio::time::sleep(delay).await;
        }
        let background = request.is_background();
        let id = link.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::Request { id, body: request };
        let bytes = encode_frame(&frame, link.settings.max_frame).map_err(|e| match e {
            CodecError::TooLarge { len, max } => PeerError::FrameTooLarge {
                peer: link.node.clone(),
                len,
                max,
            },
            other => PeerError::Encode {
                peer: link.node.clone(),
                message: other.to_string(),
            },
        })?;
        let rx = link.enqueue(id, bytes, background)?;
        let mut guard = CallGuard {
            link,
            id,
            armed: true,
        };
        let answer = tokio::time::timeout(timeout, rx).await;
        guard.armed = false;
        match answer {
            Ok(Ok(Ok(Response::Error { code, message }))) => Err(PeerError::Remote {
                peer: link.node.clone(),
                code,
                // Cut to the limit this side sends, whatever the peer sent.
                message: match Response::error(code, message) {
                    Response::Error { message, .. } => message,
                    _ => String::new(),
                },
            }),
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(PeerError::ConnectionLost {
                peer: link.node.clone(),
                why: "the call was dropped".into(),
                sent: true,
            }),
            Err(_) => {
                let sent = link.cancel(id);
                Err(PeerError::Timeout {
                    peer: link.node.clone(),
                    after_ms: timeout.as_millis() as u64,
                    sent,
                })
            }
        }
    }
}

/// Withdraws a call whose caller went away before its answer.
struct CallGuard<'a> {
    link: &'a Link,
    id: RequestId,
    armed: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.link.cancel(self.id);
        }
    }
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // A panic while holding this lock is a bug; the state is still
        // consistent at every await point, so carry on with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enqueue(
        &self,
        id: RequestId,
        bytes: Bytes,
        background: bool,
    ) -> Result<oneshot::Receiver<Result<Response, PeerError>>, PeerError> {
        let mut st = self.lock();
        let full = |what| PeerError::Overloaded {
            peer: self.node.clone(),
            what,
        };
        if st.conn == 0 {
            return Err(PeerError::NotConnected {
                peer: self.node.clone(),
            });
        }
        if st.pending.len() >= MAX_PENDING_CALLS {
            return Err(full("the table of pending calls"));
        }
        let (tx, rx) = oneshot::channel();
        if background {
            if st.background.len() >= MAX_QUEUED_BACKGROUND {
                return Err(full("the background queue"));
            }
            st.background.push_back(Outgoing { id, bytes });
        } else {
            let len = bytes.len();
            if !st.foreground.is_empty() && st.foreground_bytes + len > self.settings.queued_bytes()
            {
                return Err(full("the send queue"));
            }
            st.foreground_bytes += len;
            st.foreground.push_back(Outgoing { id, bytes });
        }
        st.pending.insert(
            id,
            Pending {
                reply: tx,
                background,
                written: None,
            },
        );
        drop(st);
        self.wake.notify_one();
        Ok(rx)
    }

    /// Forgets call `id`; answers whether its frame had been written (if not,
    /// it is withdrawn from the queue and certainly never reaches the peer).
    fn cancel(&self, id: RequestId) -> bool {
        let mut st = self.lock();
        let Some(p) = st.pending.remove(&id) else {
            return true;
        };
        if p.written.is_none() {
            if let Some(at) = st.foreground.iter().position(|o| o.id == id) {
                let o = st.foreground.remove(at).expect("position");
                st.foreground_bytes -= o.bytes.len();
            } else if let Some(at) = st.background.iter().position(|o| o.id == id) {
                st.background.remove(at);
            }
            return false;
        }
        if st.given_up.len() >= MAX_GIVEN_UP {
            st.given_up.pop_front();
        }
        st.given_up.push_back(id);
        if p.background {
            // Its slot is free again even if its answer never comes.
            st.background_in_flight = st.background_in_flight.saturating_sub(1);
            drop(st);
            self.wake.notify_one();
        }
        true
    }

    fn complete(&self, id: RequestId, body: Response) {
        let mut st = self.lock();
        // An answer to a request we have not written yet is a lie, and one
        // to an id we never wrote says nothing: ignore both, and neither
        // counts as a sign of life for the watchdog. A late answer to a
        // call we gave up on does: the peer is slow, not gone.
        if st.pending.get(&id).is_none_or(|p| p.written.is_none()) {
            if let Some(at) = st.given_up.iter().position(|&g| g == id) {
                st.given_up.remove(at);
                st.last_rx = Instant::now();
            }
            return;
        }
        let Some(p) = st.pending.remove(&id) else {
            return;
        };
        st.last_rx = Instant::now();
        st.unanswered_since = None;
        if p.background {
            st.background_in_flight = st.background_in_flight.saturating_sub(1);
        }
        drop(st);
        if p.background {
            self.wake.notify_one();
        }
        let _ = p.reply.send(Ok(body));
    }

    /// The next frame to write on connection `conn`: foreground first, then
    /// background while a slot is free. `Err` when `conn` is no longer current.
    fn next_to_write(&self, conn: u64) -> Result<Option<Bytes>, ()> {
        let mut st = self.lock();
        if st.conn != conn {
            return Err(());
        }
        let now = Instant::now();
        while let Some(o) = st.foreground.pop_front() {
            st.foreground_bytes -= o.bytes.len();
            if let Some(p) = st.pending.get_mut(&o.id) {
                p.written = Some(now);
                st.unanswered_since.get_or_insert(now);
                return Ok(Some(o.bytes));
            }
        }
        while st.background_in_flight < MAX_BACKGROUND_IN_FLIGHT {
            let Some(o) = st.background.pop_front() else {
                break;
            };
            if let Some(p) = st.pending.get_mut(&o.id) {
                p.written = Some(now);
                st.background_in_flight += 1;
                return Ok(Some(o.bytes));
            }
        }
        Ok(None)
    }

    fn open(&self) -> u64 {
        let mut st = self.lock();
        st.opened += 1;
        st.conn = st.opened;
        st.last_rx = Instant::now();
        st.given_up.clear();
        st.unanswered_since = None;
        self.connected.store(true, Ordering::Relaxed);
        st.conn
    }

    /// Ends connection `conn`: every waiting call fails, queues empty.
    fn close(&self, conn: u64, why: &str) {
        let mut st = self.lock();
        if st.conn != conn {
            return;
        }
        st.conn = 0;
        self.connected.store(false, Ordering::Relaxed);
        st.foreground.clear();
        st.foreground_bytes = 0;
        st.background.clear();
        st.background_in_flight = 0;
        let failed: Vec<Pending> = st.pending.drain().map(|(_, p)| p).collect();
        drop(st);
        for p in failed {
            let _ = p.reply.send(Err(PeerError::ConnectionLost {
                peer: self.node.clone(),
                why: why.to_string(),
                sent: p.written.is_some(),
            }));
        }
    }

    /// Whether a foreground request went out more than the silence limit
    /// ago and no answer to a waiting call arrived since (its caller may
    /// have given up already: its deadline is shorter than the limit).
    fn is_silent(&self, conn: u64) -> bool {
        let st = self.lock();
        st.conn == conn
            && st.last_rx.elapsed() >= SILENCE_LIMIT
            && st
                .unanswered_since
                .is_some_and(|t| t.elapsed() >= SILENCE_LIMIT)
    }
}

/// Keeps the connection of `link`: dial, serve until it breaks, redial.
async fn run(link: Arc<Link>) {
    let mut backoff = MIN_BACKOFF;
    while !link.stopping.load(Ordering::Relaxed) {
        match dial(link.addr, &link.settings, &link.node).await {
            Ok((reader, writer, chain)) => {
                backoff = MIN_BACKOFF;
                let conn = link.open();
                log::info!("connected to peer {} at {}", link.node, link.addr);
                let why = tokio::select! {
                    why = read_loop(&link, reader) => why,
                    why = write_loop(&link, writer, conn) => why,
                    why = watchdog(&link, conn) => why,
                    why = revalidate(&link.settings, &link.node, chain) => why,
                    _ = link.stop.notified() => "shutting down".to_string(),
                };
                link.close(conn, &why);
                if !link.stopping.load(Ordering::Relaxed) {
                    log::warn!("connection to peer {} closed: {why}", link.node);
                }
            }
            Err(e) => log::debug!("dialing peer {} at {} failed: {e}", link.node, link.addr),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(MAX_BACKOFF),
            _ = link.redial.notified() => backoff = MIN_BACKOFF,
            _ = link.stop.notified() => {}
        }
    }
}

async fn read_loop(link: &Link, mut reader: FrameReader) -> String {
    loop {
        match reader.next().await {
            None => return "closed by the peer".into(),
            Some(Err(e)) => return handshake::codec_reason(&e),
            Some(Ok(Received {
                frame: Frame::Response { id, body },
                ..
            })) => link.complete(id, body),
            Some(Ok(_)) => return "the peer sent a frame other than a response".into(),
        }
    }
}

async fn write_loop(link: &Link, mut writer: FrameWriter, conn: u64) -> String {
    loop {
        match link.next_to_write(conn) {
            Err(()) => return "replaced".into(),
            Ok(Some(first)) => {
                let mut batch = Coalesced::new(first);
                let mut replaced = false;
                while batch.wants_more() {
                    match link.next_to_write(conn) {
                        Ok(Some(more)) => batch.push(&more),
                        Ok(None) => break,
                        Err(()) => {
                            replaced = true;
                            break;
                        }
                    }
                }
                if let Err(why) = write_stalling(&mut writer, batch.bytes()).await {
                    return why;
                }
                if replaced {
                    return "replaced".into();
                }
            }
            Ok(None) => link.wake.notified().await,
        }
    }
}

/// Frames gathered for one write: the first as it is (no copy when it goes
/// alone), more appended until [`COALESCE_BYTES`].
pub(crate) struct Coalesced {
    first: Bytes,
    joined: Option<bytes::BytesMut>,
}

impl Coalesced {
    pub(crate) fn new(first: Bytes) -> Self {
        Coalesced {
            first,
            joined: None,
        }
    }

    fn len(&self) -> usize {
        self.joined.as_ref().map_or(self.first.len(), |j| j.len())
    }

    /// Whether another queued frame may join.
    pub(crate) fn wants_more(&self) -> bool {
        self.len() < COALESCE_BYTES
    }

    pub(crate) fn push(&mut self, more: &[u8]) {
        let first = &self.first;
        self.joined
            .get_or_insert_with(|| bytes::BytesMut::from(&first[..]))
            .extend_from_slice(more);
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.joined.as_deref().unwrap_or(&self.first)
    }
}

/// Writes `bytes` in pieces, each within [`WRITE_STALL`]: a peer that stops
/// reading is detected instead of holding the connection forever.
pub(crate) async fn write_stalling(writer: &mut FrameWriter, bytes: &[u8]) -> Result<(), String> {
    for piece in bytes.chunks(WRITE_CHUNK) {
        match tokio::time::timeout(WRITE_STALL, writer.write_all(piece)).await {
            Err(_) => return Err(format!("the peer read nothing for {WRITE_STALL:?}")),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(())) => {}
        }
    }
    match tokio::time::timeout(WRITE_STALL, writer.flush()).await {
        Err(_) => Err(format!("the peer read nothing for {WRITE_STALL:?}")),
        Ok(r) => r.map_err(|e| e.to_string()),
    }
}

async fn watchdog(link: &Link, conn: u64) -> String {
    let mut tick = tokio::time::interval(WATCHDOG_INTERVAL);
    loop {
        tick.tick().await;
        if link.is_silent(conn) {
            return format!("no answer within {SILENCE_LIMIT:?}");
        }
    }
}

/// Every peer of a node, by node id: a client per peer over TCP, or an
/// in-memory [`Transport`] (the simulated cluster). Cheap to clone.
#[derive(Clone, Default)]
pub struct Peers {
    clients: Arc<HashMap<String, PeerClient>>,
    /// Set instead of `clients` in a simulated cluster: the peers' ids and
    /// the network that carries calls to them.
    sim: Option<SimPeers>,
}

/// The peers' ids and the network that carries calls to them.
type SimPeers = (Arc<Vec<String>>, Arc<dyn Transport>);

/// The future of a [`Transport`] call.
pub type TransportCall =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, PeerError>> + Send>>;

/// A network other than TCP that carries calls between nodes (the
/// simulated cluster's, in memory, with scripted partitions).
pub trait Transport: Send + Sync + 'static {
    /// `request` to `node`, answered within `timeout`.
    fn call(&self, node: &str, request: Request, timeout: Duration) -> TransportCall;

    /// Whether calls to `node` currently get through.
    fn reachable(&self, node: &str) -> bool;
}

impl Peers {
    pub fn new(clients: HashMap<String, PeerClient>) -> Self {
        Peers {
            clients: Arc::new(clients),
            sim: None,
        }
    }

    /// Peers `ids` reached through `transport`.
    pub fn over(ids: Vec<String>, transport: Arc<dyn Transport>) -> Self {
        Peers {
            clients: Arc::default(),
            sim: Some((Arc::new(ids), transport)),
        }
    }

    /// Node ids of every peer, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = match &self.sim {
            Some((ids, _)) => ids.to_vec(),
            None => self.clients.keys().cloned().collect(),
        };
        ids.sort();
        ids
    }

    pub fn contains(&self, node: &str) -> bool {
        match &self.sim {
            Some((ids, _)) => ids.iter().any(|i| i == node),
            None => self.clients.contains_key(node),
        }
    }

    pub fn is_empty(&self) -> bool {
        match &self.sim {
            Some((ids, _)) => ids.is_empty(),
            None => self.clients.is_empty(),
        }
    }

    /// The TCP client of `node` (none in a simulated cluster).
    pub fn get(&self, node: &str) -> Option<&PeerClient> {
        self.clients.get(node)
    }

    /// Whether calls to `node` currently get through (its connection is
    /// up).
    pub fn is_connected(&self, node: &str) -> bool {
        match &self.sim {
            Some((_, t)) => t.reachable(node),
            None => self.clients.get(node).is_some_and(|c| c.is_connected()),
        }
    }

    /// The one way to ask another node something: `request` to `node`,
    /// answered within `timeout`.
    pub async fn call(
        &self,
        node: &str,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, PeerError> {
        if let Some((ids, t)) = &self.sim {
            if !ids.iter().any(|i| i == node) {
                return Err(PeerError::Unknown {
                    peer: node.to_string(),
                });
            }
            return t.call(node, request, timeout).await;
        }
        match self.clients.get(node) {
            Some(c) => c.call(request, timeout).await,
            None => Err(PeerError::Unknown {
                peer: node.to_string(),
            }),
        }
    }

    /// Closes every connection (at shutdown).
    pub fn shutdown(&self) {
        for c in self.clients.values() {
            c.shutdown();
        }
    }
}

#[cfg(test)]
mod coalesce_tests {
    use super::*;

    /// Frames queued together go out as one write, in order, up to
    /// [`COALESCE_BYTES`]; a frame alone is written as it is.
    #[test]
    fn queued_frames_join_in_order_up_to_the_bound() {
        let alone = Coalesced::new(Bytes::from_static(b"one"));
        assert_eq!(alone.bytes(), b"one");
        let mut batch = Coalesced::new(Bytes::from_static(b"a"));
        batch.push(b"b");
        batch.push(b"c");
        assert_eq!(batch.bytes(), b"abc");
        let chunk = vec![7u8; 20 << 10];
        let mut pushed = 0;
        while batch.wants_more() {
            batch.push(&chunk);
            pushed += 1;
        }
        assert_eq!(pushed, 4, "stops once 64 KiB are gathered");
        assert_eq!(batch.bytes().len(), 3 + 4 * (20 << 10));
    }
}

//! Peer sessions: one outbound [`PeerActor`] per remote node, one inbound
//! [`PeerSession`] per accepted connection.
//!
//! Requests that are background work (hint replay, anti-entropy, tombstone GC:
//! [`Request::is_background`]) wait in the actor and go out at most
//! [`MAX_BACKGROUND_IN_FLIGHT`] at a time, while client requests are written at
//! once: a client request never waits behind more than that many background
//! frames. Repair pages its transfers so each frame stays small.
//!
//! Outbound, a `PeerActor` dials its node, exchanges hellos, then multiplexes
//! requests on that one connection: each [`Call`] gets a fresh request id, its
//! reply is routed back by id, so a slow request delays no other. When the
//! connection breaks, every pending call fails at once and the actor redials
//! with exponential backoff ([`MIN_BACKOFF`]..[`MAX_BACKOFF`]). While it is not
//! connected, calls fail immediately instead of queueing. A connection on which
//! requests wait but nothing arrives for [`SILENCE_LIMIT`] is dropped and redialed.
//!
//! Inbound, a [`PeerListener`] accepts connections and starts a `PeerSession`
//! for each. The first frame must be a hello of the same cluster and protocol;
//! then every request is served concurrently by the [`Inbound`] dispatcher and
//! answered with the same id. A corrupt, oversized or unexpected frame closes
//! that one session (logged); the node goes on serving.
//!
//! Both sides set TCP_NODELAY and TCP keepalive.

use crate::inbound::Inbound;
use crate::wire::{CodecError, Frame, FrameCodec, Hello, Request, RequestId, Response};
use actix::io::{FramedWrite, WriteHandler};
use actix::prelude::*;
use futures_util::{SinkExt, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_util::codec::{Framed, FramedRead};

pub const MIN_BACKOFF: Duration = Duration::from_millis(50);
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
pub const SILENCE_LIMIT: Duration = Duration::from_secs(5);
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
const KEEPALIVE: Duration = Duration::from_secs(10);
/// Background requests (hint replay, anti-entropy, GC) in flight per
/// connection; the rest wait in the actor, so client requests never queue
/// behind more than this many background frames.
pub const MAX_BACKGROUND_IN_FLIGHT: usize = 1;

/// What both sides of a peer connection need to know.
#[derive(Clone, Debug)]
pub struct PeerSettings {
    pub hello: Hello,
    pub max_frame: usize,
}

/// Why a call to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    #[error("not connected to {0}")]
    NotConnected(String),
    #[error("connection to {0} lost")]
    ConnectionLost(String),
    #[error("peer actor stopped")]
    Stopped,
}

fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let _ = sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE)
            .with_interval(KEEPALIVE),
    );
}

/// Send `request` to the peer; answers its response.
#[derive(Message)]
#[rtype(result = "Result<Response, PeerError>")]
pub struct Call(pub Request);

struct Pending {
    reply: oneshot::Sender<Result<Response, PeerError>>,
    sent: Instant,
    background: bool,
}

type Reply = oneshot::Sender<Result<Response, PeerError>>;

/// The outbound connection to one remote node.
pub struct PeerActor {
    /// Whether the connection is up now (read by `/ready`).
    pub connected: Arc<std::sync::atomic::AtomicBool>,
    node_id: String,
    addr: SocketAddr,
    settings: Arc<PeerSettings>,
    writer: Option<FramedWrite<Frame, OwnedWriteHalf, FrameCodec>>,
    reader: Option<SpawnHandle>,
    pending: HashMap<RequestId, Pending>,
    background: VecDeque<(Request, Reply)>,
    background_in_flight: usize,
    next_id: RequestId,
    backoff: Duration,
    last_rx: Instant,
}

impl PeerActor {
    /// `connected` is kept up to date with the connection's state.
    pub fn new(
        node_id: String,
        addr: SocketAddr,
        settings: Arc<PeerSettings>,
        connected: Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        PeerActor {
            connected,
            node_id,
            addr,
            settings,
            writer: None,
            reader: None,
            pending: HashMap::new(),
            background: VecDeque::new(),
            background_in_flight: 0,
            next_id: 1,
            backoff: MIN_BACKOFF,
            last_rx: Instant::now(),
        }
    }

    fn dial(&mut self, ctx: &mut Context<Self>) {
        let (addr, settings, node) = (self.addr, self.settings.clone(), self.node_id.clone());
        ctx.spawn(
            async move { dial(addr, &settings, &node).await }
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok(stream) => {
                        log::info!("connected to peer {} at {}", act.node_id, act.addr);
                        act.backoff = MIN_BACKOFF;
                        act.last_rx = Instant::now();
                        let (r, w) = stream.into_split();
                        let max = act.settings.max_frame;
                        act.reader = Some(ctx.add_stream(FramedRead::new(r, FrameCodec::new(max))));
                        act.connected
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                        act.writer = Some(FramedWrite::new(w, FrameCodec::new(max), ctx));
                    }
                    Err(e) => {
                        log::debug!("dialing peer {} at {} failed: {e}", act.node_id, act.addr);
                        act.redial_later(ctx);
                    }
                }),
        );
    }

    fn redial_later(&mut self, ctx: &mut Context<Self>) {
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        ctx.run_later(delay, |act, ctx| act.dial(ctx));
    }

    fn disconnect(&mut self, ctx: &mut Context<Self>, why: &str) {
        if self.writer.is_none() && self.reader.is_none() {
            return;
        }
        log::warn!("connection to peer {} closed: {why}", self.node_id);
        self.connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.reader.take() {
            ctx.cancel_future(h);
        }
        if let Some(mut w) = self.writer.take() {
            w.close();
        }
        for (_, p) in self.pending.drain() {
            let _ = p
                .reply
                .send(Err(PeerError::ConnectionLost(self.node_id.clone())));
        }
        self.redial_later(ctx);
    }

    /// Drops abandoned calls; replaces a connection that went silent.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let before = self.pending.len();
        let mut abandoned_background = 0;
        self.pending.retain(|_, p| {
            let keep = !p.reply.is_closed();
            if !keep && p.background {
                abandoned_background += 1;
            }
            keep
        });
        if before != self.pending.len() {
            self.background_in_flight -= abandoned_background;
            self.send_background();
        }
        let oldest = self.pending.values().map(|p| p.sent).min();
        if let Some(sent) = oldest {
            if sent.elapsed() > SILENCE_LIMIT && self.last_rx.elapsed() > SILENCE_LIMIT {
                self.disconnect(ctx, "no answer within the silence limit");
            }
        }
    }
}

async fn dial(addr: SocketAddr, settings: &PeerSettings, node: &str) -> Result<TcpStream, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tune(&stream);
    let mut framed = Framed::new(stream, FrameCodec::new(settings.max_frame));
    framed
        .send(Frame::Hello(settings.hello.clone()))
        .await
        .map_err(|e| e.to_string())?;
    let reply = tokio::time::timeout(HELLO_TIMEOUT, framed.next())
        .await
        .map_err(|_| "no hello in time".to_string())?;
    match reply {
        Some(Ok(Frame::Hello(theirs))) => {
            if let Some(why) = settings.hello.mismatch(&theirs) {
                log::error!("refusing peer {node}: {why}");
                return Err(why);
            }
            if theirs.node_id != node {
                return Err(format!("expected node {node}, {} answered", theirs.node_id));
            }
            Ok(framed.into_inner())
        }
        Some(Ok(other)) => Err(format!("expected hello, got {other:?}")),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("closed during hello".into()),
    }
}

impl Actor for PeerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        self.dial(ctx);
        ctx.run_interval(SWEEP_INTERVAL, |act, ctx| act.sweep(ctx));
    }
}

impl PeerActor {
    fn send_now(&mut self, request: Request, reply: Reply) {
        let Some(writer) = self.writer.as_mut() else {
            let _ = reply.send(Err(PeerError::NotConnected(self.node_id.clone())));
            return;
        };
        let background = request.is_background();
        if background {
            self.background_in_flight += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        writer.write(Frame::Request { id, body: request });
        self.pending.insert(
            id,
            Pending {
                reply,
                sent: Instant::now(),
                background,
            },
        );
    }

    fn send_background(&mut self) {
        while self.background_in_flight < MAX_BACKGROUND_IN_FLIGHT {
            let Some((request, reply)) = self.background.pop_front() else {
                return;
            };
            self.send_now(request, reply);
        }
    }
}

impl Handler<Call> for PeerActor {
    type Result = ResponseFuture<Result<Response, PeerError>>;

    fn handle(&mut self, msg: Call, _: &mut Context<Self>) -> Self::Result {
        if self.writer.is_none() {
            let err = PeerError::NotConnected(self.node_id.clone());
            return Box::pin(async move { Err(err) });
        }
        let (tx, rx) = oneshot::channel();
        if msg.0.is_background() {
            self.background.push_back((msg.0, tx));
            self.send_background();
        } else {
            self.send_now(msg.0, tx);
        }
        Box::pin(async move { rx.await.unwrap_or(Err(PeerError::Stopped)) })
    }
}

impl StreamHandler<Result<Frame, CodecError>> for PeerActor {
    fn handle(&mut self, item: Result<Frame, CodecError>, ctx: &mut Context<Self>) {
        self.last_rx = Instant::now();
        match item {
            Ok(Frame::Response { id, body }) => {
                if let Some(p) = self.pending.remove(&id) {
                    let _ = p.reply.send(Ok(body));
                    if p.background {
                        self.background_in_flight -= 1;
                        self.send_background();
                    }
                }
            }
            Ok(other) => self.disconnect(ctx, &format!("unexpected frame {other:?}")),
            Err(e) => self.disconnect(ctx, &e.to_string()),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.disconnect(ctx, "closed by the peer");
    }
}

impl WriteHandler<CodecError> for PeerActor {
    fn error(&mut self, err: CodecError, ctx: &mut Context<Self>) -> Running {
        self.disconnect(ctx, &err.to_string());
        Running::Continue
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

/// Accepts peer connections and starts a session for each.
pub struct PeerListener;

impl PeerListener {
    /// Serves peers on an already-bound listener until the arbiter stops.
    pub async fn run(listener: TcpListener, settings: Arc<PeerSettings>, inbound: Inbound) {
        loop {
            match listener.accept().await {
                Ok((stream, from)) => {
                    tune(&stream);
                    let (settings, inbound) = (settings.clone(), inbound.clone());
                    PeerSession::create(move |ctx| {
                        let (r, w) = stream.into_split();
                        ctx.add_stream(FramedRead::new(r, FrameCodec::new(settings.max_frame)));
                        PeerSession {
                            from,
                            writer: FramedWrite::new(w, FrameCodec::new(settings.max_frame), ctx),
                            settings,
                            inbound,
                            peer: None,
                        }
                    });
                }
                Err(e) => {
                    log::warn!("accepting a peer connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// One accepted connection from a peer coordinator.
pub struct PeerSession {
    from: SocketAddr,
    writer: FramedWrite<Frame, OwnedWriteHalf, FrameCodec>,
    settings: Arc<PeerSettings>,
    inbound: Inbound,
    /// The peer's node id once its hello was accepted.
    peer: Option<String>,
}

impl PeerSession {
    fn close(&mut self, ctx: &mut Context<Self>, why: String) {
        let who = self.peer.clone().unwrap_or_else(|| self.from.to_string());
        log::warn!("closing peer session from {who}: {why}");
        ctx.stop();
    }
}

impl Actor for PeerSession {
    type Context = Context<Self>;
}

impl StreamHandler<Result<Frame, CodecError>> for PeerSession {
    fn handle(&mut self, item: Result<Frame, CodecError>, ctx: &mut Context<Self>) {
        match (item, self.peer.is_some()) {
            (Ok(Frame::Hello(theirs)), false) => {
                if let Some(why) = self.settings.hello.mismatch(&theirs) {
                    return self.close(ctx, why);
                }
                self.peer = Some(theirs.node_id);
                self.writer.write(Frame::Hello(self.settings.hello.clone()));
            }
            (Ok(Frame::Request { id, body }), true) => {
                let inbound = self.inbound.clone();
                let from = self.peer.clone().unwrap_or_default();
                ctx.spawn(
                    async move { inbound.handle(&from, body).await }
                        .into_actor(self)
                        .map(move |body, act, _| act.writer.write(Frame::Response { id, body })),
                );
            }
            (Ok(other), greeted) => {
                let what = if greeted {
                    "unexpected frame"
                } else {
                    "expected hello, got"
                };
                self.close(ctx, format!("{what} {other:?}"))
            }
            (Err(e), _) => self.close(ctx, e.to_string()),
        }
    }
}

impl WriteHandler<CodecError> for PeerSession {
    fn error(&mut self, err: CodecError, ctx: &mut Context<Self>) -> Running {
        self.close(ctx, err.to_string());
        Running::Stop
    }
}

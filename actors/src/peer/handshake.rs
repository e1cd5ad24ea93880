//! Dialing and the hello exchange, for both sides of a peer connection.
//!
//! The dialer connects (within [`CONNECT_TIMEOUT`]), sends its hello and
//! waits for the listener's (within [`HELLO_TIMEOUT`]); it accepts the answer
//! only from the node it meant to reach. The listener reads the dialer's hello
//! with a small frame limit ([`HELLO_MAX_FRAME`]) and a deadline, checks it
//! ([`check_hello`]) and answers with its own. Only then is the frame limit
//! raised to the configured maximum.
//!
//! With TLS on (`tls.rs`), both sides run a TLS 1.3 handshake with
//! certificates of the cluster CA before the hellos; the dialer accepts only
//! the certificate of the node it dialed, the listener only a hello whose
//! node its client certificate names, coming from that node's address.
//!
//! This is the only file that knows the transport is TCP (or TLS over TCP):
//! the rest of the peer layer sees a [`PeerStream`].

use super::tls::{identity, verify_identity};
use super::{PeerSettings, CONNECT_TIMEOUT, HELLO_TIMEOUT, KEEPALIVE, MAX_HANDSHAKES, WRITE_STALL};
use crate::wire::{encode_frame, printable, CodecError, Frame, FrameCodec, Hello, HELLO_MAX_FRAME};
use futures_util::StreamExt;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

/// A byte stream to a peer (TCP today; TLS wraps the same shape).
pub trait PeerIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> PeerIo for T {}

pub type PeerStream = Box<dyn PeerIo>;
/// The reading side of a connection, decoding frames.
pub type FrameReader = FramedRead<ReadHalf<PeerStream>, FrameCodec>;
/// The writing side of a connection.
pub type FrameWriter = WriteHalf<PeerStream>;

/// Sets TCP_NODELAY and keepalive on a fresh connection, and an abortive
/// close: a connection we give up on (silent, stalled, replaced) must not
/// leave its unsent frames to the kernel, which would go on retransmitting
/// them and deliver a write — say one of a value deleted since — long after
/// every deadline, when the partition heals. With a linger of zero, closing
/// discards them and resets the connection.
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let _ = sock.set_linger(Some(std::time::Duration::ZERO));
    let _ = sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE)
            .with_interval(KEEPALIVE),
    );
}

/// Splits a stream into a frame reader (limited to `max` bytes per frame)
/// and a writer.
pub fn split(stream: PeerStream, max: usize) -> (FrameReader, FrameWriter) {
    let (r, w) = tokio::io::split(stream);
    (FramedRead::new(r, FrameCodec::new(max)), w)
}

/// Writes one frame within [`WRITE_STALL`].
pub async fn send_frame(w: &mut FrameWriter, frame: &Frame, max: usize) -> Result<(), String> {
    let bytes = encode_frame(frame, max).map_err(|e| e.to_string())?;
    tokio::time::timeout(WRITE_STALL, async {
        w.write_all(&bytes).await?;
        w.flush().await
    })
    .await
    .map_err(|_| "the peer does not read".to_string())?
    .map_err(|e| e.to_string())
}

/// Reads the next frame within `deadline`.
async fn next_frame(r: &mut FrameReader, deadline: std::time::Duration) -> Result<Frame, String> {
    match tokio::time::timeout(deadline, r.next()).await {
        Err(_) => Err("no hello in time".into()),
        Ok(None) => Err("closed during the hello".into()),
        Ok(Some(Err(e))) => Err(e.to_string()),
        Ok(Some(Ok(received))) => Ok(received.frame),
    }
}

/// Dials `node` at `addr` (from this node's own configured IP), runs the TLS
/// handshake when TLS is on (the peer must present `node`'s certificate),
/// and exchanges hellos.
pub async fn dial(
    addr: SocketAddr,
    settings: &PeerSettings,
    node: &str,
) -> Result<(FrameReader, FrameWriter, Chain), String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect_from(addr, settings))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tune(&stream);
    let (stream, chain): (PeerStream, Chain) = match &settings.tls {
        None => (Box::new(stream), None),
        Some(tls) => {
            let name = ServerName::try_from(identity(node)).map_err(|e| e.to_string())?;
            let connector = tokio_rustls::TlsConnector::from(tls.client());
            let tls_stream = tokio::time::timeout(HELLO_TIMEOUT, connector.connect(name, stream))
                .await
                .map_err(|_| "no TLS handshake in time".to_string())?
                .map_err(|e| format!("TLS: {e}"))?;
            let chain = tls_stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.to_vec())
                .unwrap_or_default();
            // rustls matched the name (wildcards included); a node's
            // identity must be named exactly.
            verify_identity(&tls.roots(), &chain, node, UnixTime::now())?;
            (Box::new(tls_stream), Some(chain))
        }
    };
    let (mut r, mut w) = split(stream, HELLO_MAX_FRAME);
    send_frame(
        &mut w,
        &Frame::Hello(settings.hello.clone()),
        HELLO_MAX_FRAME,
    )
    .await?;
    match next_frame(&mut r, HELLO_TIMEOUT).await? {
        Frame::Hello(theirs) => {
            if let Some(why) = settings.hello.mismatch(&theirs) {
                log::error!("refusing peer {node}: {why}");
                return Err(why);
            }
            if theirs.node_id != node {
                return Err(format!(
                    "expected node {node}, {} answered",
                    printable(&theirs.node_id)
                ));
            }
        }
        _ => return Err("expected a hello".into()),
    }
    r.decoder_mut().set_max(settings.max_frame);
    Ok((r, w, chain))
}

/// Connects to `addr` from this node's configured peer IP, when it has a
/// specific one (so peers can check where the connection comes from).
async fn connect_from(addr: SocketAddr, settings: &PeerSettings) -> std::io::Result<TcpStream> {
    let own = settings
        .addresses
        .get(&settings.hello.node_id)
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified());
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = own.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(addr).await
}

/// Why a hello may not open a session: another cluster or protocol, a node
/// id that is not a configured member, or our own id.
pub fn check_hello(settings: &PeerSettings, theirs: &Hello) -> Result<(), String> {
    if let Some(why) = settings.hello.mismatch(theirs) {
        return Err(why);
    }
    if theirs.node_id == settings.hello.node_id {
        return Err(format!(
            "the peer claims to be this node ({})",
            settings.hello.node_id
        ));
    }
    if !settings.members.contains(&theirs.node_id) {
        return Err(format!(
            "'{}' is not a member of this cluster",
            printable(&theirs.node_id)
        ));
    }
    Ok(())
}

/// Whether a connection from `from` may speak for member `id`: it must come
/// from the IP of `id`'s configured peer address (unless that is a wildcard).
pub fn check_origin(settings: &PeerSettings, id: &str, from: SocketAddr) -> Result<(), String> {
    let from = from.ip().to_canonical();
    match settings.addresses.get(id) {
        Some(a) if !a.ip().is_unspecified() && a.ip().to_canonical() != from => Err(format!(
            "a connection from {from} cannot speak for {id}, whose address is {}",
            a.ip()
        )),
        _ => Ok(()),
    }
}

/// Whether a new connection from `from` may even start a handshake: when
/// every member's peer address is specific, only those IPs may (a stranger
/// cannot hold the handshake slots members need to reconnect). Answers how
/// many handshakes that IP may have in progress at once: two per member
/// configured at it (a wildcard address admits everyone, four at a time;
/// without addresses there is no per-IP cap).
pub fn admissible(settings: &PeerSettings, from: SocketAddr) -> Result<usize, String> {
    let from = from.ip().to_canonical();
    if settings.addresses.is_empty() {
        return Ok(MAX_HANDSHAKES);
    }
    let mut at_ip = 0;
    for a in settings.addresses.values() {
        if a.ip().is_unspecified() {
            return Ok(4);
        }
        if a.ip().to_canonical() == from {
            at_ip += 1;
        }
    }
    if at_ip == 0 {
        return Err(format!("{from} is not the address of any member"));
    }
    Ok(2 * at_ip)
}

/// The certificate chain a peer presented (with TLS on).
pub type Chain = Option<Vec<CertificateDer<'static>>>;

/// How often an open connection's peer certificate is checked again.
pub const RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Ends, with the reason, once the certificate `node` presented no longer
/// holds — it expired, or the CA bundle reloaded since no longer accepts
/// it (a CA rotation cuts the members it leaves out at once, not at their
/// next reconnect). Never ends without TLS.
pub async fn revalidate(settings: &PeerSettings, node: &str, chain: Chain) -> String {
    let (Some(tls), Some(chain)) = (&settings.tls, chain) else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(RECHECK).await;
        if let Err(why) = verify_identity(&tls.roots(), &chain, node, UnixTime::now()) {
            return format!("its certificate no longer holds: {why}");
        }
    }
}

/// The listener's side: runs the TLS handshake when TLS is on (a client
/// certificate of the cluster CA is required), reads and checks the
/// dialer's hello — its certificate must name the member the hello claims,
/// and the connection must come from that member's address — and answers
/// ours. Answers the peer's node id and the connection, its frame limit
/// raised.
pub async fn accept(
    stream: TcpStream,
    from: SocketAddr,
    settings: &PeerSettings,
) -> Result<(String, FrameReader, FrameWriter, Chain), String> {
    // One deadline for the TLS handshake and the hello together: a slot is
    // never held longer than HELLO_TIMEOUT.
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let (stream, certs): (PeerStream, Chain) = match &settings.tls {
        None => (Box::new(stream), None),
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server());
            let s = tokio::time::timeout_at(deadline, acceptor.accept(stream))
                .await
                .map_err(|_| "no TLS handshake in time".to_string())?
                .map_err(|e| format!("TLS: {e}"))?;
            let certs = s.get_ref().1.peer_certificates().map(|c| c.to_vec());
            (Box::new(s), Some(certs.unwrap_or_default()))
        }
    };
    let (mut r, mut w) = split(stream, HELLO_MAX_FRAME);
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let theirs = match next_frame(&mut r, left).await? {
        Frame::Hello(h) => h,
        _ => return Err("expected a hello first".into()),
    };
    check_hello(settings, &theirs)?;
    check_origin(settings, &theirs.node_id, from)?;
    if let (Some(tls), Some(chain)) = (&settings.tls, &certs) {
        verify_identity(&tls.roots(), chain, &theirs.node_id, UnixTime::now()).map_err(|why| {
            format!(
                "its certificate cannot speak for {}: {why}",
                printable(&theirs.node_id)
            )
        })?;
    }
    send_frame(
        &mut w,
        &Frame::Hello(settings.hello.clone()),
        HELLO_MAX_FRAME,
    )
    .await?;
    r.decoder_mut().set_max(settings.max_frame);
    Ok((theirs.node_id, r, w, certs))
}

/// Maps a decoding failure to the reason logged when a connection closes
/// (TLS without close_notify is an ordinary close: frames carry their
/// length, so a cut frame is still seen as one).
pub fn codec_reason(e: &CodecError) -> String {
    match e {
        CodecError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "closed by the peer".into()
        }
        other => other.to_string(),
    }
}

//! The client port's server, assembled from actix-server and actix-http
//! (rather than `actix_web::HttpServer`, which only serves bare sockets):
//! each accepted socket is admitted by the [`ConnGuard`] (or answered 503
//! and closed), wrapped in [`Guarded`] so every request position on the
//! connection has its deadlines, put under TLS when the port serves HTTPS
//! (the handshake is under the first head's deadline), and then served by
//! actix-http's HTTP/1 dispatcher over the app. The connection's [`Conn`]
//! goes into its extensions for the request tracker.

use super::guard::{refusal_response, ConnGuard};
use super::io::{Guarded, HasConn};
use actix_http::body::MessageBody;
use actix_http::{Extensions, HttpServiceBuilder, Protocol, Request, Response};
use actix_server::{GracefulShutdownSignal, Server};
use actix_service::{
    fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_web::dev::AppConfig;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// How the port is served.
pub struct ServeOptions {
    pub workers: usize,
    /// How long a stopping server lets connections finish (seconds).
    pub shutdown_timeout_s: u64,
    /// HTTPS, when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Sockets the workers hold at once, admitted or not: beyond, the
    /// accept loop pauses (new connections wait in the kernel's queue, not
    /// in descriptors). Above the table's cap by the connections it may be
    /// closing and refusing at once, so a full table still evicts.
    pub max_sockets: usize,
}

/// Starts serving `listener` with the app `factory` builds (one per worker).
pub fn serve<F, I, S, B>(
    listener: std::net::TcpListener,
    factory: F,
    guard: Arc<ConnGuard>,
    opts: ServeOptions,
) -> io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as actix_service::Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let workers = opts.workers.clamp(1, 512);
    let builder = Server::build()
        .workers(workers)
        .max_concurrent_connections(opts.max_sockets.div_ceil(workers).max(1))
        .backlog(1024)
        .shutdown_timeout(opts.shutdown_timeout_s)
        .disable_signals();
    let signal = builder.graceful_shutdown_signal();
    let builder = match opts.tls {
        None => builder.listen("ringkv-http", listener, move || {
            let guard = guard.clone();
            let http = http_service::<Guarded<TcpStream>, _, _, _, _>(
                factory.clone(),
                signal.clone(),
                &guard,
            );
            fn_service(move |tcp: TcpStream| {
                let guard = guard.clone();
                async move {
                    let (io, peer) = admit(tcp, &guard, true)?;
                    Ok((io, Protocol::Http1, Some(peer)))
                }
            })
            .and_then(http)
        })?,
        Some(tls) => builder.listen("ringkv-https", listener, move || {
            let guard = guard.clone();
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            let http =
                http_service::<tokio_rustls::server::TlsStream<Guarded<TcpStream>>, _, _, _, _>(
                    factory.clone(),
                    signal.clone(),
                    &guard,
                );
            fn_service(move |tcp: TcpStream| {
                let (guard, acceptor) = (guard.clone(), acceptor.clone());
                async move {
                    let (io, peer) = admit(tcp, &guard, false)?;
                    // The guarded socket times the handshake (the first
                    // head's deadline starts at the accept).
                    let tls = acceptor
                        .accept(io)
                        .await
                        .map_err(actix_http::error::DispatchError::Io)?;
                    tls.get_ref().0.handshake_done();
                    Ok((tls, Protocol::Http1, Some(peer)))
                }
            })
            .and_then(http)
        })?,
    };
    Ok(builder.run())
}

/// Admits `tcp` or, refused, answers it 503 (plain HTTP only: a TLS port
/// cannot speak before its handshake) and closes it.
fn admit(
    tcp: TcpStream,
    guard: &Arc<ConnGuard>,
    plain: bool,
) -> Result<(Guarded<TcpStream>, SocketAddr), actix_http::error::DispatchError> {
    let peer = tcp
        .peer_addr()
        .map_err(actix_http::error::DispatchError::Io)?;
    match guard.admit(peer.ip()) {
        Ok(conn) => {
            let _ = tcp.set_nodelay(true);
            Ok((Guarded::new(tcp, conn, guard.clone()), peer))
        }
        Err(why) => {
            if plain {
                // Best effort, never waiting: the socket's buffer is empty
                // (a fresh tokio socket has no readiness yet, so write on
                // the non-blocking std socket).
                if let Ok(mut std) = tcp.into_std() {
                    use std::io::Write as _;
                    let _ = std.write(&refusal_response(why));
                }
            }
            Err(actix_http::error::DispatchError::Io(io::Error::other(
                "connection refused at a cap",
            )))
        }
    }
}

fn http_service<IO, F, I, S, B>(
    factory: F,
    signal: GracefulShutdownSignal,
    guard: &ConnGuard,
) -> impl ServiceFactory<
    (IO, Protocol, Option<SocketAddr>),
    Config = (),
    Response = (),
    Error = actix_http::error::DispatchError,
    InitError = (),
>
where
    IO: AsyncRead + AsyncWrite + Unpin + HasConn + 'static,
    F: Fn() -> I,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as actix_service::Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let limits = guard.limits;
    let app = factory()
        .into_factory()
        .map_err(|err| err.into().error_response());
    HttpServiceBuilder::<IO, _>::default()
        .keep_alive(Duration::from_millis(limits.keep_alive_ms.max(1)))
        .client_request_timeout(Duration::from_millis(limits.head_timeout_ms.max(1)))
        .client_disconnect_timeout(Duration::from_secs(1))
        // A client that half-closes is gone: its handler stops (a stalled
        // disk cannot pile up connections in CLOSE-WAIT).
        .h1_allow_half_closed(false)
        .graceful_shutdown_signal(move || {
            let signal = signal.clone();
            async move { signal.notified().await }
        })
        .on_connect_ext(|io: &IO, ext: &mut Extensions| {
            ext.insert(io.conn());
        })
        .finish(map_config(app, |_| AppConfig::default()))
}

//! One persistent HTTP/1.1 keep-alive connection per client (hyper 1.x client
//! connection over a TCP stream with TCP_NODELAY, or TLS over it), with
//! bounded reconnects. A node's [`Access`] says whether to speak TLS (with
//! which CA) and which bearer token to send.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{header, Method, Request};
use hyper_util::rt::TokioIo;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// A node to send requests to.
#[derive(Clone, Debug)]
pub struct Node {
    /// As given (`host:port`), also sent as the `Host` header.
    pub host: String,
    pub addr: SocketAddr,
    /// TLS and token; the same for every node of a run.
    pub access: Arc<Access>,
}

impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
        self.addr == other.addr
    }
}

impl Eq for Node {}

/// How to reach the nodes of a secured cluster.
#[derive(Clone, Default)]
pub struct Access {
    /// HTTPS, checking certificates against the CA it was made with.
    pub tls: Option<tokio_rustls::TlsConnector>,
    /// `Authorization: Bearer …`.
    pub token: Option<header::HeaderValue>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        f.debug_struct("Access")
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl Access {
    /// TLS with the CA certificates in `ca_file` (if any) and `token`.
    pub fn new(ca_file: Option<&Path>, token: Option<&str>) -> Result<Access, String> {
        let tls = match ca_file {
            None => None,
            Some(path) => {
                use rustls::pki_types::pem::PemObject;
                use rustls::pki_types::CertificateDer;
                let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!("{}: holds no certificate", path.display()));
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
            }
        };
        let token = match token {
            None => None,
            Some(t) => Some(
                header::HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                    .map_err(|_| "the token has characters a header cannot carry".to_string())?,
            ),
        };
        Ok(Access { tls, token })
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)
    }
}

impl Node {
    /// Parses `host:port` (an optional `http://` and trailing `/` are
    /// accepted) and resolves it.
    #[cfg(test)]
    pub fn parse(raw: &str) -> Result<Node, String> {
        Node::parse_with(raw, Arc::default())
    }

    /// Parses `host:port` for a run with `access`; `https://` needs TLS.
    pub fn parse_with(raw: &str, access: Arc<Access>) -> Result<Node, String> {
        let s = raw.trim();
        if s.starts_with("https://") && access.tls.is_none() {
            return Err(format!("'{s}': HTTPS needs --ca-file"));
        }
        let s = s.strip_prefix("http://").unwrap_or(s);
        let s = s
            .strip_prefix("https://")
            .unwrap_or(s)
            .trim_end_matches('/');
        if s.is_empty() {
            return Err("empty node address".into());
        }
        if s.contains('/') {
            return Err(format!("'{raw}' is not host:port (no paths)"));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!(
                "'{raw}' has no port; give host:port, e.g. 127.0.0.1:7101"
            ));
        };
        if host.is_empty() {
            return Err(format!("'{raw}' has no host"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("'{raw}' has an invalid port '{port}'")),
        }
        let addr = s
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve '{raw}': {e}"))?
            .next()
            .ok_or_else(|| format!("'{raw}' resolves to no address"))?;
        Ok(Node {
            host: s.to_string(),
            addr,
            access,
        })
    }
}

/// A complete answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No complete answer within the timeout (the connection is dropped).
    Timeout,
    /// The connection broke during the request (or could not be made).
    Connection(String),
    /// The connection could not be re-established within the reconnect
    /// budget: the client should stop.
    GaveUp(String),
}

type Sender = SendRequest<Full<Bytes>>;

/// Opens one connection: TCP connect (bounded by `timeout`), TCP_NODELAY,
/// HTTP/1.1 handshake. The connection task runs on the runtime.
pub async fn connect(node: &Node, timeout: Duration) -> Result<Sender, String> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(node.addr))
        .await
        .map_err(|_| format!("connect to {node} timed out after {timeout:?}"))?
        .map_err(|e| format!("connect to {node}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY on {node}: {e}"))?;
    let Some(tls) = &node.access.tls else {
        return handshake(TokioIo::new(stream), node).await;
    };
    let host = node
        .host
        .rsplit_once(':')
        .map_or(node.host.as_str(), |(h, _)| h);
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .map_err(|e| format!("{node}: not a TLS server name: {e}"))?;
    let stream = tokio::time::timeout(timeout, tls.connect(name, stream))
        .await
        .map_err(|_| format!("TLS handshake with {node} timed out after {timeout:?}"))?
        .map_err(|e| format!("TLS handshake with {node}: {e}"))?;
    handshake(TokioIo::new(stream), node).await
}

async fn handshake<T>(io: TokioIo<T>, node: &Node) -> Result<Sender, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake with {node}: {e}"))?;
    tokio::spawn(async move {
        // Ends when the server closes or the sender is dropped.
        let _ = conn.await;
    });
    Ok(sender)
}

/// A request to `node` with its Host and, when it has one, its token.
pub fn request(
    node: &Node,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, node.host.as_str());
    if let Some(t) = &node.access.token {
        req = req.header(header::AUTHORIZATION, t.clone());
    }
    req.body(Full::new(body))
        .map_err(|e| format!("bad request {path}: {e}"))
}

/// Reconnect policy of a [`Client`].
#[derive(Clone, Copy, Debug)]
pub struct ReconnectPolicy {
    pub connect_timeout: Duration,
    /// How many connection attempts a client may make after its connection
    /// failed (broke, timed out, or could not be made) before giving up.
    pub max_reconnects: u32,
}

/// A client's connection to its node: made on first use, remade after a
/// failure with at most `max_reconnects` attempts in total.
pub struct Client {
    node: Node,
    policy: ReconnectPolicy,
    sender: Option<Sender>,
    /// The last connection (or connect attempt) ended by a failure rather
    /// than a clean close by the server while idle.
    failed: bool,
    /// Reconnects after failures, counted against the budget.
    pub reconnects: u32,
}

impl Client {
    pub fn new(node: Node, policy: ReconnectPolicy) -> Client {
        Client {
            node,
            policy,
            sender: None,
            failed: false,
            reconnects: 0,
        }
    }

    /// The node's address as given.
    pub fn node_name(&self) -> &str {
        &self.node.host
    }

    /// A usable sender, connecting if needed. Makes at most one connection
    /// attempt, so a call never blocks for long on a dead node: after a
    /// failure each call waits a growing pause (50 ms doubling to 1 s), then
    /// tries once, counting against the budget.
    async fn sender(&mut self) -> Result<&mut Sender, CallError> {
        if self.sender.as_ref().is_some_and(|s| s.is_closed()) {
            // Closed by the server while idle (keep-alive expiry): reopen
            // without counting it as a failure.
            self.sender = None;
        }
        if self.sender.is_none() {
            if self.failed {
                if self.reconnects >= self.policy.max_reconnects {
                    return Err(CallError::GaveUp(format!(
                        "{}: gave up after {} reconnect attempts",
                        self.node, self.reconnects
                    )));
                }
                self.reconnects += 1;
                let pause = 50u64 << (self.reconnects.min(6) - 1);
                tokio::time::sleep(Duration::from_millis(pause.min(1000))).await;
            }
            match connect(&self.node, self.policy.connect_timeout).await {
                Ok(s) => {
                    self.sender = Some(s);
                    self.failed = false;
                }
                Err(e) => {
                    self.failed = true;
                    return Err(CallError::Connection(e));
                }
            }
        }
        Ok(self.sender.as_mut().expect("connected above"))
    }

    /// Sends one request and reads the whole answer. `timeout` bounds the
    /// exchange; (re)connecting before it is bounded by the reconnect policy.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let req = request(&self.node, method, path, body).map_err(CallError::Connection)?;
        let sender = self.sender().await?;
        let result = tokio::time::timeout(timeout, async {
            let conn_err = |e: hyper::Error| CallError::Connection(e.to_string());
            sender.ready().await.map_err(conn_err)?;
            let resp = sender.send_request(req).await.map_err(conn_err)?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(conn_err)?
                .to_bytes();
            Ok(Reply { status, body })
        })
        .await;
        match result {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                self.drop_connection();
                Err(e)
            }
            Err(_) => {
                // The answer may still arrive on this connection: never reuse it.
                self.drop_connection();
                Err(CallError::Timeout)
            }
        }
    }

    fn drop_connection(&mut self) {
        self.sender = None;
        self.failed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_parse() {
        let n = Node::parse("127.0.0.1:7101").unwrap();
        assert_eq!(n.addr, "127.0.0.1:7101".parse().unwrap());
        assert_eq!(n.host, "127.0.0.1:7101");
        assert_eq!(
            Node::parse(" http://127.0.0.1:7102/ ").unwrap().host,
            "127.0.0.1:7102"
        );
        assert!(Node::parse("localhost:7101").is_ok());
    }

    #[test]
    fn bad_node_addresses_are_explained() {
        let err = |s: &str| Node::parse(s).unwrap_err();
        assert!(err("127.0.0.1").contains("no port"));
        assert!(err("127.0.0.1:http").contains("invalid port"));
        assert!(err("127.0.0.1:0").contains("invalid port"));
        assert!(err("127.0.0.1:70000").contains("invalid port"));
        assert!(err(":7101").contains("no host"));
        assert!(err("https://127.0.0.1:7101").contains("--ca-file"));
        assert!(err("127.0.0.1:7101/v1").contains("no paths"));
        assert!(err("").contains("empty"));
    }

    #[tokio::test]
    async fn unreachable_node_fails_fast_then_gives_up() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let node = Node::parse(&format!("127.0.0.1:{port}")).unwrap();
        let mut c = Client::new(
            node,
            ReconnectPolicy {
                connect_timeout: Duration::from_millis(200),
                max_reconnects: 2,
            },
        );
        let t = Duration::from_secs(5);
        // The first connection, then two counted reconnect attempts: each
        // call fails fast with a connection error; then the client gives up.
        for _ in 0..3 {
            let r = c.call(Method::GET, "/health", Bytes::new(), t).await;
            assert!(matches!(r, Err(CallError::Connection(_))), "{r:?}");
        }
        let last = c.call(Method::GET, "/health", Bytes::new(), t).await;
        assert!(matches!(last, Err(CallError::GaveUp(_))), "{last:?}");
        assert_eq!(c.reconnects, 2);
    }
}

//! A raw connection to a node's peer port, the way tests play a member (or
//! an impostor): plain TCP on a cluster without peer TLS, else TLS 1.3 with
//! the certificate of a node of the cluster's CA (or of another CA). The
//! test then writes whatever frames it likes. The other way round, a
//! connection a node dialed to a member's address can be accepted with that
//! member's certificate ([`PeerConn::accept`]), so a test plays the member
//! the node believes it reached.

use crate::harness::Cluster;
use ringkv_actors::peer::tls::{identity, PeerTls, TlsFiles};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub enum PeerConn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// A connection a node dialed, accepted as the member it dialed.
    Served(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

/// `as_node`'s TLS material in `certs`.
fn material(certs: &Path, as_node: &str) -> PeerTls {
    let files = TlsFiles {
        ca: certs.join("ca.crt"),
        cert: certs.join(format!("{as_node}.crt")),
        key: certs.join(format!("{as_node}.key")),
    };
    PeerTls::new(as_node, files).unwrap_or_else(|e| panic!("certificate of {as_node}: {e}"))
}

/// The TLS client configuration of `as_node`'s certificate in `certs`.
pub fn client_config(certs: &Path, as_node: &str) -> Arc<rustls::ClientConfig> {
    material(certs, as_node).client()
}

impl PeerConn {
    /// Connects to node `target`'s peer port, with `as_node`'s certificate
    /// when the cluster's peers use TLS.
    pub fn connect(c: &Cluster, target: usize, as_node: &str) -> PeerConn {
        let node = c.node(target);
        if !c.spec.security.peer_tls {
            return PeerConn::Plain(tcp(node.peer_addr));
        }
        let config = client_config(&c.dir.path().join("certs"), as_node);
        PeerConn::tls(node.peer_addr, &node.id, config)
    }

    /// Accepts `stream`, which a node dialed to member `as_node`'s address:
    /// with `certs` (the cluster's certificates, when its peers use TLS, see
    /// [`certs_of`]) as `as_node`, with its certificate, requiring the
    /// node's client certificate as a real member does.
    pub fn accept(stream: TcpStream, certs: Option<&Path>, as_node: &str) -> PeerConn {
        let Some(certs) = certs else {
            return PeerConn::Plain(stream);
        };
        let config = material(certs, as_node).server();
        let conn = rustls::ServerConnection::new(config).expect("TLS server");
        PeerConn::Served(Box::new(rustls::StreamOwned::new(conn, stream)))
    }

    /// TLS to `addr`, expecting node `target_id`'s certificate.
    pub fn tls(addr: SocketAddr, target_id: &str, config: Arc<rustls::ClientConfig>) -> PeerConn {
        let name = rustls::pki_types::ServerName::try_from(identity(target_id)).expect("name");
        let conn = rustls::ClientConnection::new(config, name).expect("TLS client");
        PeerConn::Tls(Box::new(rustls::StreamOwned::new(conn, tcp(addr))))
    }

    /// Completes the TLS handshake and answers the certificate the node
    /// presented (DER), or why there is none.
    pub fn peer_cert(&mut self) -> Result<Vec<u8>, String> {
        match self {
            PeerConn::Plain(_) | PeerConn::Served(_) => {
                Err("not a TLS connection we dialed".into())
            }
            PeerConn::Tls(s) => {
                while s.conn.is_handshaking() {
                    s.conn
                        .complete_io(&mut s.sock)
                        .map_err(|e| format!("TLS handshake: {e}"))?;
                }
                s.conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec())
                    .ok_or_else(|| "no certificate".into())
            }
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            PeerConn::Plain(s) => s,
            PeerConn::Tls(s) => &s.sock,
            PeerConn::Served(s) => &s.sock,
        }
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) {
        self.tcp().set_read_timeout(t).expect("read timeout");
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) {
        self.tcp().set_write_timeout(t).expect("write timeout");
    }
}

/// The cluster's certificate directory when its peers use TLS.
pub fn certs_of(c: &Cluster) -> Option<std::path::PathBuf> {
    c.spec.security.peer_tls.then(|| c.dir.path().join("certs"))
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    s
}

impl Read for PeerConn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            PeerConn::Plain(s) => s.read(buf),
            PeerConn::Tls(s) => s.read(buf),
            PeerConn::Served(s) => s.read(buf),
        }
    }
}

impl Write for PeerConn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            PeerConn::Plain(s) => s.write(buf),
            PeerConn::Tls(s) => s.write(buf),
            PeerConn::Served(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            PeerConn::Plain(s) => s.flush(),
            PeerConn::Tls(s) => s.flush(),
            PeerConn::Served(s) => s.flush(),
        }
    }
}

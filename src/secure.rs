//! A node's security material at start and while it runs: the peer TLS
//! configuration, the certificate of the HTTPS port and the client tokens,
//! each loaded and checked before the node serves anything (a missing,
//! expired or mismatched file refuses start, naming the file and why), and
//! reloaded — certificate rotation and token changes without a restart —
//! when any of their files changes (checked every [`WATCH_INTERVAL`]) or on
//! SIGHUP. A reload that fails its checks is logged and counted, and the
//! material in force stays.

use crate::auth::Auth;
use crate::certs::tls_files;
use crate::config::NodeConfig;
use ringkv_actors::metrics::Metrics;
use ringkv_actors::peer::tls::{https_config, CurrentCert, PeerTls, ServedCert};
use rustls::server::ResolvesServerCert;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often the files are checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// What serves the HTTPS port's certificate.
pub enum HttpsCert {
    /// The node's own (peer) certificate.
    Node(Arc<PeerTls>),
    /// A pair of its own.
    Own(Arc<ServedCert>),
}

/// A node's security material.
#[derive(Default)]
pub struct NodeSecurity {
    /// The node's certificate, CA and TLS configurations (when any TLS is on).
    pub tls: Option<Arc<PeerTls>>,
    /// Peers use `tls`.
    pub peer_tls: bool,
    pub https: Option<HttpsCert>,
    pub auth: Option<Arc<Auth>>,
}

impl NodeSecurity {
    /// Loads and checks everything the config asks for.
    pub fn load(node: &NodeConfig) -> Result<NodeSecurity, String> {
        let Some(s) = &node.cluster.security else {
            log::warn!(
                "SECURITY IS OFF: this config has no [security] section, so peers talk plain TCP \
                 without authentication and the HTTP API takes requests from anyone who can \
                 reach it. Use it only on a trusted network (see README: Security)."
            );
            return Ok(NodeSecurity::default());
        };
        let tls = if s.uses_tls() {
            let files = tls_files(s, &node.id);
            Some(Arc::new(
                PeerTls::new(&node.id, files).map_err(|e| e.to_string())?,
            ))
        } else {
            None
        };
        let https = if !s.http_tls {
            None
        } else if s.http_cert_file.is_some() {
            let (cert, key) = s.http_files(&node.id);
            Some(HttpsCert::Own(Arc::new(
                ServedCert::new(cert, key).map_err(|e| e.to_string())?,
            )))
        } else {
            Some(HttpsCert::Node(tls.clone().expect("http_tls loads tls")))
        };
        let auth = match &s.tokens_file {
            None => {
                log::warn!(
                    "security.tokens_file is not set: the HTTP API takes requests without a token"
                );
                None
            }
            Some(file) => {
                if !file.exists() {
                    return Err(format!(
                        "{}: the tokens file does not exist; create a token with \
                         `ringkv token create --config {} --role admin`",
                        file.display(),
                        node.cluster.path.display()
                    ));
                }
                Some(Arc::new(Auth::load(
                    file.clone(),
                    s.auth_failures_per_minute,
                )?))
            }
        };
        if !s.peer_tls {
            log::warn!("security.peer_tls = false: peers talk plain TCP without authentication");
        }
        if !s.http_tls {
            log::warn!(
                "security.http_tls = false: clients talk plain HTTP (tokens travel in clear)"
            );
        }
        Ok(NodeSecurity {
            tls,
            peer_tls: s.peer_tls,
            https,
            auth,
        })
    }

    /// The peer layer's TLS, when peers use it.
    pub fn peer(&self) -> Option<Arc<PeerTls>> {
        self.tls.clone().filter(|_| self.peer_tls)
    }

    /// The HTTPS server configuration, when the client port uses TLS.
    pub fn https_config(&self) -> Result<Option<rustls::ServerConfig>, String> {
        let resolver: Arc<dyn ResolvesServerCert> = match &self.https {
            None => return Ok(None),
            Some(HttpsCert::Node(tls)) => Arc::new(CurrentCert(tls.clone())),
            Some(HttpsCert::Own(own)) => own.clone(),
        };
        https_config(resolver).map(Some).map_err(|e| e.to_string())
    }

    /// Every file whose change triggers a reload.
    fn watched(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let Some(tls) = &self.tls {
            let f = tls.files();
            files.extend([f.ca.clone(), f.cert.clone(), f.key.clone()]);
        }
        if let Some(HttpsCert::Own(own)) = &self.https {
            files.extend(own.files());
        }
        if let Some(auth) = &self.auth {
            files.push(auth.file.clone());
        }
        files
    }

    /// Reloads everything; logs and counts what failed (the old stays).
    pub fn reload(&self, metrics: &Metrics, why: &str) {
        let mut failed = false;
        let mut report = |what: &str, r: Result<String, String>| match r {
            Ok(done) => log::info!("{why}: reloaded {what}{done}"),
            Err(e) => {
                failed = true;
                log::error!("{why}: cannot reload {what}, keeping the one in force: {e}");
            }
        };
        if let Some(tls) = &self.tls {
            report(
                "the node certificate and CA",
                tls.reload()
                    .map(|_| String::new())
                    .map_err(|e| e.to_string()),
            );
        }
        if let Some(HttpsCert::Own(own)) = &self.https {
            report(
                "the HTTPS certificate",
                own.reload()
                    .map(|_| String::new())
                    .map_err(|e| e.to_string()),
            );
        }
        if let Some(auth) = &self.auth {
            report(
                "the tokens",
                auth.reload().map(|n| format!(" ({n} in force)")),
            );
        }
        Metrics::add(
            if failed {
                &metrics.tls_reload_failures
            } else {
                &metrics.tls_reloads
            },
            1,
        );
    }

    /// Reloads on SIGHUP and whenever a watched file changes.
    pub fn watch(self: Arc<Self>, metrics: Arc<Metrics>) {
        let files = self.watched();
        if files.is_empty() {
            return;
        }
        actix_rt::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(h) => Some(h),
                Err(e) => {
                    log::error!("cannot watch SIGHUP ({e}); files are still watched");
                    None
                }
            };
            let mut seen = stamps(&files);
            loop {
                let why = tokio::select! {
                    _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => "SIGHUP",
                    _ = tokio::time::sleep(WATCH_INTERVAL) => {
                        let now = stamps(&files);
                        if now == seen {
                            continue;
                        }
                        seen = now;
                        "a file changed"
                    }
                };
                self.reload(&metrics, why);
            }
        });
    }
}

/// Per file: its modification time, size and inode (a rename changes it).
fn stamps(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f).ok().map(|m| {
                (
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    m.len(),
                    m.ino(),
                )
            })
        })
        .collect()
}

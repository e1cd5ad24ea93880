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
use ringkv_actors::peer::tls::{expires_unix, https_config, CurrentCert, PeerTls, ServedCert};
use rustls::server::ResolvesServerCert;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often the files are checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// A certificate this close to expiry is warned about (every hour).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);
/// Closer than this, the warning is an error.
pub const EXPIRY_ERROR: Duration = Duration::from_secs(7 * 86_400);
/// How often certificate expiry is looked at while nothing changes.
const EXPIRY_CHECK_EVERY: u32 = 3600;

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
        if s.ca_key_file.exists() {
            log::warn!(
                "the CA private key {} is on this node: whoever reads this node's disk can \
                 mint member certificates; keep it offline outside development",
                s.ca_key_file.display()
            );
        }
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
        let report = |what: &str, r: Result<String, String>| match r {
            Ok(done) => {
                log::info!("{why}: reloaded {what}{done}");
                true
            }
            Err(e) => {
                log::error!("{why}: cannot reload {what}, keeping the one in force: {e}");
                false
            }
        };
        if let Some(tls) = &self.tls {
            failed |= !report(
                "the node certificate and CA",
                tls.reload()
                    .map(|_| String::new())
                    .map_err(|e| e.to_string()),
            );
        }
        if let Some(HttpsCert::Own(own)) = &self.https {
            failed |= !report(
                "the HTTPS certificate",
                own.reload()
                    .map(|_| String::new())
                    .map_err(|e| e.to_string()),
            );
        }
        if let Some(auth) = &self.auth {
            let ok = report(
                "the tokens file (revocations in it wait until it loads)",
                auth.reload().map(|n| format!(" ({n} in force)")),
            );
            Metrics::add(
                if ok {
                    &metrics.tokens_reloads
                } else {
                    &metrics.tokens_reload_failures
                },
                1,
            );
        }
        if self.tls.is_none() && self.https.is_none() {
            return;
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

    /// The first expiry among this node's certificates: its file and when
    /// (unix seconds).
    pub fn first_expiry(&self) -> Option<(PathBuf, u64)> {
        let mut certs = Vec::new();
        if let Some(tls) = &self.tls {
            certs.push((tls.files().cert.clone(), tls.certified_key()));
        }
        if let Some(HttpsCert::Own(own)) = &self.https {
            certs.push((own.files()[0].clone(), own.certified_key()));
        }
        certs
            .into_iter()
            .filter_map(|(file, key)| Some((file, expires_unix(key.cert.first()?)?)))
            .min_by_key(|(_, at)| *at)
    }

    /// Publishes the first expiry and warns when it is near.
    pub fn check_expiry(&self, metrics: &Metrics) {
        let Some((file, at)) = self.first_expiry() else {
            return;
        };
        metrics
            .cert_expiry_unix
            .store(at, std::sync::atomic::Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let left = Duration::from_secs(at.saturating_sub(now));
        let days = left.as_secs() / 86_400;
        if left < EXPIRY_ERROR {
            log::error!(
                "the certificate {} expires in {days} days: renew it (`ringkv certs renew`) \
                 or peers will refuse this node",
                file.display()
            );
        } else if left < EXPIRY_WARNING {
            log::warn!(
                "the certificate {} expires in {days} days: renew it (`ringkv certs renew`)",
                file.display()
            );
        }
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
            let mut ticks = 0u32;
            self.check_expiry(&metrics);
            loop {
                let why = tokio::select! {
                    _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => "SIGHUP",
                    _ = tokio::time::sleep(WATCH_INTERVAL) => {
                        ticks += 1;
                        if ticks >= EXPIRY_CHECK_EVERY {
                            ticks = 0;
                            self.check_expiry(&metrics);
                        }
                        let now = stamps(&files);
                        if now == seen {
                            continue;
                        }
                        seen = now;
                        "a file changed"
                    }
                };
                self.reload(&metrics, why);
                self.check_expiry(&metrics);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_first_expiry_is_published_and_near_ones_are_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            r#"
[cluster]
name = "t"
replication_factor = 1

[security]

[[nodes]]
id = "a"
http_addr = "127.0.0.1:7101"
peer_addr = "127.0.0.1:7201"
data_dir = "data/a"
"#,
        )
        .unwrap();
        let cfg = Config::load(&path).unwrap();
        crate::certs::init(&cfg, 3, false).unwrap();
        let sec = NodeSecurity::load(&cfg.node("a").unwrap()).unwrap();
        let metrics = Metrics::default();
        sec.check_expiry(&metrics);
        let at = metrics
            .cert_expiry_unix
            .load(std::sync::atomic::Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            (now + 3 * 86_400 - 60..=now + 3 * 86_400 + 60).contains(&at),
            "{at} vs {now}"
        );
        assert!(metrics
            .render()
            .contains(&format!("ringkv_tls_cert_expiry_timestamp_seconds {at}")));
        let (file, _) = sec.first_expiry().unwrap();
        assert!(file.ends_with("certs/a.crt"), "{file:?}");
    }
}

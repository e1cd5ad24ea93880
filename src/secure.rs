//! A node's security material at start and while it runs: the peer TLS
//! configuration, the certificate of the HTTPS port and the client tokens,
//! each loaded and checked before the node serves anything (a missing,
//! expired or mismatched file refuses start, naming the file and why), and
//! reloaded — certificate rotation and token changes without a restart —
//! when any of their files changes (checked every [`WATCH_INTERVAL`]) or on
//! SIGHUP.
//!
//! Each material (the tokens file; the node certificate, key and CA bundle;
//! the HTTPS pair) is reloaded on its own ([`retry::Reloader`] decides when
//! and what to report). A reload that fails is retried every tick until it
//! succeeds; meanwhile `ringkv_reload_failing{file=...}` is 1, `GET
//! /v1/cluster` lists it with since when and the last error, and an error
//! line is logged at once, then at most once a minute. What is in force
//! stays, except where that would grant more than the newer files do (fail
//! closed):
//!
//! * a tokens file that changed and cannot be loaded refuses every token
//!   (503 `tokens_unavailable`) until it loads: it may revoke one;
//! * a CA bundle that changed and cannot be loaded leaves trusted only the
//!   CAs both in force and in the new file as far as it parses (an
//!   unreadable file: none), so a rotation removing a CA never keeps it
//!   trusted; open sessions of a removed CA are cut within seconds.

mod reload;
mod retry;

use crate::auth::Auth;
use crate::certs::tls_files;
use crate::config::NodeConfig;
use retry::{Reloader, Report, Stamp};
use ringkv_actors::metrics::{Metrics, Reloadable};
use ringkv_actors::peer::tls::{expires_unix, https_config, CurrentCert, PeerTls, ServedCert};
use rustls::server::ResolvesServerCert;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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
    /// Per material, its files' stamps taken before they were loaded.
    loaded: Vec<(Reloadable, Vec<Stamp>)>,
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
        let mut loaded = Vec::new();
        let tls = if s.uses_tls() {
            let files = tls_files(s, &node.id);
            loaded.push((
                Reloadable::Tls,
                stamps(&[files.ca.clone(), files.cert.clone(), files.key.clone()]),
            ));
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
            loaded.push((Reloadable::Https, stamps(&[cert.clone(), key.clone()])));
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
                loaded.push((Reloadable::Tokens, stamps(std::slice::from_ref(file))));
                Some(Arc::new(Auth::load(
                    file.clone(),
                    s.auth_failures_per_minute,
                )?))
            }
        };
        if !s.peer_tls && auth.is_some() {
            log::warn!(
                "security.peer_tls = false with security.allow_unauthenticated_peers: anyone \
                 who reaches the peer port from a member's address reads and writes every \
                 key without a token"
            );
        } else if !s.peer_tls {
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
            loaded,
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

    /// Reloads on SIGHUP, whenever a watched file changes, and every tick
    /// while a reload is failing.
    pub fn watch(self: Arc<Self>, metrics: Arc<Metrics>) {
        let mut materials: Vec<(Reloadable, Vec<PathBuf>, Reloader)> = self
            .loaded
            .iter()
            .map(|(what, stamps)| (*what, self.files_of(*what), Reloader::new(stamps.clone())))
            .collect();
        if materials.is_empty() {
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
            let epoch = Instant::now();
            let mut ticks = 0u32;
            self.check_expiry(&metrics);
            loop {
                let forced = tokio::select! {
                    _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => true,
                    _ = tokio::time::sleep(WATCH_INTERVAL) => {
                        ticks += 1;
                        if ticks >= EXPIRY_CHECK_EVERY {
                            ticks = 0;
                            self.check_expiry(&metrics);
                        }
                        false
                    }
                };
                let mut loaded = false;
                for (what, files, reloader) in &mut materials {
                    // Taken before the files are read: a change during the
                    // read makes the next tick reload again.
                    let taken = stamps(files);
                    if !reloader.due(&taken, forced) {
                        continue;
                    }
                    let why = if forced {
                        "SIGHUP"
                    } else if reloader.failing().is_some() {
                        "retrying"
                    } else {
                        "a file changed"
                    };
                    let result = self.reload_one(*what);
                    let report = reloader.done(
                        taken,
                        result.as_ref().map(|_| ()).map_err(String::clone),
                        epoch.elapsed().as_millis() as u64,
                        wall_ms(),
                    );
                    loaded |= matches!(report, Report::Loaded { .. });
                    self.report(*what, why, &result, &report, reloader.failing(), &metrics);
                }
                if loaded {
                    self.check_expiry(&metrics);
                }
            }
        });
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Per file: its modification time, size and inode (a rename changes it).
fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
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

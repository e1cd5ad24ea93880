//! `ringkv certs init|renew`: a development CA and one certificate per node
//! of a config, written where the config's `[security]` section says.
//!
//! * `init` makes what is missing: the CA (10 years) unless its certificate
//!   exists, then each node's key and certificate (`--days`, default 365)
//!   unless both exist (`--force` reissues them). Private keys are written
//!   with mode 0600. With an operator's own CA, put its certificate at
//!   `ca_file` and the node pairs at `cert_file`/`key_file`; `init` then has
//!   nothing to do (and never needs the CA key).
//! * `renew` issues new keys and certificates for every node (or `--node`)
//!   from the existing CA; running nodes pick them up within a second (they
//!   watch the files) or on SIGHUP, without a restart.
//!
//! Every file is replaced atomically, and every node's new pair is checked
//! the way a node checks it at start before the command reports success.

use crate::config::{Config, NodeSection, SecuritySection};
use crate::files::write_atomic;
use ringkv_actors::certgen::{Ca, Issued, NodeNames, Validity};
use ringkv_actors::peer::tls::{Material, TlsFiles};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Validity of a CA made by `init`.
pub const CA_DAYS: u32 = 3650;
/// Default validity of node certificates.
pub const NODE_DAYS: u32 = 365;

fn security(cfg: &Config) -> Result<&SecuritySection, String> {
    cfg.security.as_ref().ok_or_else(|| {
        format!(
            "{}: has no [security] section, so it uses no certificates",
            cfg.path.display()
        )
    })
}

/// What a node's certificate names: its identity and the IPs it serves on
/// (loopback when it listens on every address).
/// A node's certificate and key files: its peer pair, and its HTTPS pair
/// when the config names a separate one (`true`).
fn pairs_of(s: &SecuritySection, node: &NodeSection) -> Vec<(PathBuf, PathBuf, bool)> {
    let mut pairs = vec![(
        SecuritySection::for_node(&s.cert_file, &node.id),
        SecuritySection::for_node(&s.key_file, &node.id),
        false,
    )];
    if s.http_cert_file.is_some() {
        let (cert, key) = s.http_files(&node.id);
        pairs.push((cert, key, true));
    }
    pairs
}

/// A node certificate, or an HTTPS-only one (no node identity: no peer
/// credential, so it may live on a proxy).
fn issue(ca: &Ca, node: &NodeSection, https: bool, days: u32) -> Result<Issued, String> {
    let names = node_names(node);
    let validity = Validity::days(days);
    let issued = if https {
        ca.issue_https(&names, validity)
    } else {
        ca.issue_node(&node.id, &names, validity)
    };
    issued.map_err(|e| e.to_string())
}

pub fn node_names(node: &NodeSection) -> NodeNames {
    let mut ips: Vec<IpAddr> = Vec::new();
    for a in [&node.http_addr, &node.peer_addr] {
        if let Ok(addr) = a.parse::<SocketAddr>() {
            let ip = addr.ip();
            let ip = if ip.is_unspecified() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                ip
            };
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    NodeNames { ips, dns: vec![] }
}

/// The files of node `id`.
pub fn tls_files(s: &SecuritySection, id: &str) -> TlsFiles {
    TlsFiles {
        ca: s.ca_file.clone(),
        cert: SecuritySection::for_node(&s.cert_file, id),
        key: SecuritySection::for_node(&s.key_file, id),
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

fn write_pair(cert: &Path, key: &Path, issued: &Issued) -> Result<(), String> {
    // The key first: a node that reloads in between sees a mismatched pair,
    // refuses it and keeps the old one until the certificate follows.
    write_atomic(key, issued.key_pem.as_bytes(), 0o600)?;
    write_atomic(cert, issued.cert_pem.as_bytes(), 0o644)
}

fn load_ca(s: &SecuritySection) -> Result<Ca, String> {
    if !s.ca_key_file.exists() {
        return Err(format!(
            "{}: the CA key is not here, so no certificate can be issued (with your own CA, \
             issue node certificates with it)",
            s.ca_key_file.display()
        ));
    }
    Ca::load(&read(&s.ca_file)?, &read(&s.ca_key_file)?)
        .map_err(|e| format!("{}: {e}", s.ca_file.display()))
}

/// `certs init`: answers one line per file written or kept.
pub fn init(cfg: &Config, days: u32, force: bool) -> Result<Vec<String>, String> {
    let s = security(cfg)?;
    let mut report = Vec::new();
    if !s.ca_file.exists() {
        let (_, issued) =
            Ca::generate(&cfg.cluster.name, Validity::days(CA_DAYS)).map_err(|e| e.to_string())?;
        write_atomic(&s.ca_key_file, issued.key_pem.as_bytes(), 0o600)?;
        write_atomic(&s.ca_file, issued.cert_pem.as_bytes(), 0o644)?;
        report.push(format!(
            "created a development CA: {} (key {})",
            s.ca_file.display(),
            s.ca_key_file.display()
        ));
    }
    let mut ca = None;
    for node in &cfg.nodes {
        for (cert, key, https) in pairs_of(s, node) {
            if cert.exists() && key.exists() && !force {
                report.push(format!("kept {}", cert.display()));
                continue;
            }
            if ca.is_none() {
                ca = Some(load_ca(s)?);
            }
            let issued = issue(ca.as_ref().expect("loaded"), node, https, days)?;
            write_pair(&cert, &key, &issued)?;
            report.push(format!("issued {} (key {})", cert.display(), key.display()));
        }
        Material::load(&tls_files(s, &node.id), &node.id).map_err(|e| e.to_string())?;
    }
    Ok(report)
}

/// `certs renew`: new keys and certificates from the existing CA.
pub fn renew(cfg: &Config, only: Option<&str>, days: u32) -> Result<Vec<String>, String> {
    let s = security(cfg)?;
    let ca = load_ca(s)?;
    let nodes: Vec<&NodeSection> = cfg
        .nodes
        .iter()
        .filter(|n| only.is_none_or(|id| id == n.id))
        .collect();
    if nodes.is_empty() {
        return Err(format!(
            "no node '{}' in {}",
            only.unwrap_or(""),
            cfg.path.display()
        ));
    }
    let mut report = Vec::new();
    for node in nodes {
        for (cert, key, https) in pairs_of(s, node) {
            let issued = issue(&ca, node, https, days)?;
            write_pair(&cert, &key, &issued)?;
            report.push(format!("renewed {}", cert.display()));
        }
        Material::load(&tls_files(s, &node.id), &node.id).map_err(|e| e.to_string())?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(dir: &Path) -> Config {
        let text = r#"
[cluster]
name = "t"
replication_factor = 2

[security]

[[nodes]]
id = "a"
http_addr = "127.0.0.1:7101"
peer_addr = "127.0.0.1:7201"
data_dir = "data/a"

[[nodes]]
id = "b"
http_addr = "0.0.0.0:7102"
peer_addr = "127.0.0.1:7202"
data_dir = "data/b"
"#;
        let path = dir.join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path).unwrap()
    }

    #[test]
    fn init_makes_what_is_missing_with_private_keys_0600_and_renew_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let report = init(&cfg, 30, false).unwrap();
        assert!(report[0].contains("development CA"), "{report:?}");
        let mode = |p: &str| {
            std::fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("certs/ca.key"), 0o600);
        assert_eq!(mode("certs/a.key"), 0o600);
        assert_eq!(mode("certs/b.crt"), 0o644);
        let a_before = std::fs::read(dir.path().join("certs/a.crt")).unwrap();
        let again = init(&cfg, 30, false).unwrap();
        assert!(again.iter().all(|l| l.starts_with("kept")), "{again:?}");
        renew(&cfg, Some("a"), 30).unwrap();
        let a_after = std::fs::read(dir.path().join("certs/a.crt")).unwrap();
        assert_ne!(a_before, a_after);
        let s = cfg.security.as_ref().unwrap();
        Material::load(&tls_files(s, "a"), "a").unwrap();
        assert!(renew(&cfg, Some("zz"), 30).is_err());
    }

    #[test]
    fn a_separate_https_certificate_is_no_peer_credential() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        let s = cfg.security.as_mut().unwrap();
        s.http_cert_file = Some(dir.path().join("certs/{node}-https.crt"));
        s.http_key_file = Some(dir.path().join("certs/{node}-https.key"));
        init(&cfg, 30, false).unwrap();
        let s = cfg.security.as_ref().unwrap();
        let (cert, key) = s.http_files("a");
        // It serves HTTPS...
        ringkv_actors::peer::tls::ServedCert::new(cert.clone(), key.clone()).unwrap();
        // ... but cannot speak for node a on the peer port.
        let files = TlsFiles {
            ca: s.ca_file.clone(),
            cert,
            key,
        };
        let e = Material::load(&files, "a").unwrap_err().to_string();
        assert!(e.contains("a-https.crt"), "{e}");
        renew(&cfg, Some("a"), 30).unwrap();
        assert!(Material::load(&files, "a").is_err(), "renewed alike");
    }

    #[test]
    fn without_the_ca_key_nothing_can_be_issued() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        init(&cfg, 30, false).unwrap();
        std::fs::remove_file(dir.path().join("certs/ca.key")).unwrap();
        std::fs::remove_file(dir.path().join("certs/b.crt")).unwrap();
        let e = init(&cfg, 30, false).unwrap_err();
        assert!(e.contains("ca.key") && e.contains("not here"), "{e}");
    }
}

//! Mutual TLS for peer connections (and the certificate the HTTPS port
//! serves), with rustls (ring provider), TLS 1.3 only.
//!
//! A node's identity is the DNS name `<node id>.node.ringkv` in its
//! certificate ([`identity`]); every certificate must chain to the cluster CA.
//! The dialer checks that the node it reached presents the identity of the
//! node it meant to reach; the listener requires a client certificate and,
//! after the handshake, checks that it names the node the hello claims to be
//! (see `handshake.rs`), so nothing a member learns about another comes from
//! a connection that member did not open or answer.
//!
//! Material is loaded and checked as a whole ([`Material::load`]): each file
//! readable and in PEM, the key matching the certificate, the certificate
//! chaining to the CA, valid now and naming this node — otherwise an error
//! naming the file and the reason. [`PeerTls::reload`] swaps in new material
//! only when it passes the same checks (certificate rotation without
//! downtime: new connections use the new material; open ones are checked
//! again against it every few seconds, see `handshake::revalidate`).
//!
//! Which CAs of the bundle are trusted is [`bundle::Trust`]'s business: only
//! CAs valid now (an expired CA stops being trusted while the node runs),
//! and, while a changed bundle cannot be loaded, only those also in the new
//! file ([`PeerTls::restrict_to_ca_file`]). Every check — rustls's during a
//! handshake and ours after it and every few seconds — uses those roots.

pub mod bundle;
mod refuse;

use bundle::{CaCert, Trust};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The DNS name a node's certificate carries.
pub fn identity(node_id: &str) -> String {
    format!("{node_id}.node.ringkv")
}

/// The crypto provider every TLS config uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where a node's TLS material lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA's certificates (PEM; several during a CA rotation).
    pub ca: PathBuf,
    /// This node's certificate chain (PEM).
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
}

/// Why TLS material is unusable, naming the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct TlsError {
    pub file: String,
    pub reason: String,
}

fn err(file: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError {
        file: file.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The time now, in unix seconds.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Checked TLS material of one node.
#[derive(Clone, Debug)]
pub struct Material {
    /// The roots of `cas`.
    pub roots: Arc<RootCertStore>,
    /// The CA certificates of the bundle (each valid when loaded).
    pub cas: Vec<CaCert>,
    pub key: Arc<CertifiedKey>,
}

impl Material {
    /// Loads and checks the files for node `node_id`.
    pub fn load(files: &TlsFiles, node_id: &str) -> Result<Material, TlsError> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| err(p, format!("cannot read: {e}")));
        let now = unix_now();
        let cas = bundle::parse_strict(&files.ca, &bundle::read_bounded(&files.ca)?, now)?;
        let roots = Trust::new(cas.clone()).roots_at(now).store;
        let cert_pem = read(&files.cert)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| err(&files.cert, format!("not a PEM certificate: {e}")))?;
        if chain.is_empty() {
            return Err(err(&files.cert, "holds no certificate"));
        }
        let roots = Arc::new(roots);
        verify_identity(&roots, &chain, node_id, UnixTime::now())
            .map_err(|reason| err(&files.cert, reason))?;
        let key_pem = read(&files.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| err(&files.key, format!("not a PEM private key: {e}")))?;
        let certified = CertifiedKey::from_der(chain, key, &provider())
            .map_err(|e| err(&files.key, mismatch(&files.cert, e)))?;
        Ok(Material {
            roots,
            cas,
            key: Arc::new(certified),
        })
    }
}

/// When a certificate expires (unix seconds), if it parses.
pub fn expires_unix(cert: &CertificateDer<'_>) -> Option<u64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    u64::try_from(parsed.validity().not_after.timestamp()).ok()
}

fn mismatch(cert: &Path, e: rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "does not match {}: it is not the key of that certificate",
            cert.display()
        ),
        other => format!("cannot be used with {}: {other}", cert.display()),
    }
}

/// Checks that `chain` chains to `roots`, is valid at `now`, may serve as
/// both ends of a connection, and names node `node_id`.
pub fn verify_identity(
    roots: &Arc<RootCertStore>,
    chain: &[CertificateDer<'static>],
    node_id: &str,
    now: UnixTime,
) -> Result<(), String> {
    let name = ServerName::try_from(identity(node_id))
        .map_err(|_| format!("'{node_id}' cannot be a certificate name"))?;
    let (end, rest) = chain.split_first().ok_or("no certificate")?;
    if roots.is_empty() {
        return Err("no CA is trusted now (see the CA bundle's reload errors)".into());
    }
    let server = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| e.to_string())?;
    server
        .verify_server_cert(end, rest, &name, &[], now)
        .map_err(|e| describe(e, node_id))?;
    let client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| e.to_string())?;
    client
        .verify_client_cert(end, rest, now)
        .map_err(|e| describe(e, node_id))?;
    names_exactly(end, node_id)
}

/// The certificate must carry `identity(node_id)` itself as a DNS name: a
/// wildcard (`*.node.ringkv`) that name matching would accept never speaks
/// for a node.
fn names_exactly(end: &CertificateDer<'_>, node_id: &str) -> Result<(), String> {
    let want = identity(node_id);
    let (_, parsed) = x509_parser::parse_x509_certificate(end)
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let named = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value.general_names.iter().any(|n| {
                matches!(n, x509_parser::extensions::GeneralName::DNSName(d)
                    if d.eq_ignore_ascii_case(&want))
            })
        });
    if named {
        Ok(())
    } else {
        Err(format!(
            "the certificate does not name node {node_id} exactly (it must carry the DNS name {want}; wildcards do not count)"
        ))
    }
}

fn describe(e: rustls::Error, node_id: &str) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::Expired) => "the certificate has expired".into(),
        rustls::Error::InvalidCertificate(C::NotValidYet) => {
            "the certificate is not valid yet".into()
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "the certificate does not chain to the cluster CA".into()
        }
        rustls::Error::InvalidCertificate(C::NotValidForName)
        | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => format!(
            "the certificate does not name node {node_id} (it must carry the DNS name {})",
            identity(node_id)
        ),
        other => other.to_string(),
    }
}

/// The TLS configurations of one node, reloadable as a whole.
pub struct PeerTls {
    node_id: String,
    files: TlsFiles,
    current: RwLock<Arc<Configs>>,
}

/// What is in force: the trust, the key, and the configurations built
/// from the roots trusted until `until`.
struct Configs {
    trust: Trust,
    key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    /// Unix second from which `roots` must be rebuilt (a CA expires).
    until: i64,
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("node_id", &self.node_id)
            .field("files", &self.files)
            .finish()
    }
}

fn build(trust: Trust, key: Arc<CertifiedKey>, now: i64) -> Result<Configs, TlsError> {
    let bad = |e: rustls::Error| TlsError {
        file: "tls".into(),
        reason: e.to_string(),
    };
    let trusted = trust.roots_at(now);
    let roots = Arc::new(trusted.store);
    let client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(bad)?
        .with_root_certificates(roots.clone())
        .with_client_cert_resolver(Arc::new(FixedClient(key.clone())));
    let verifier: Arc<dyn ClientCertVerifier> = if roots.is_empty() {
        // No CA is trusted: no client certificate is (webpki's verifier
        // cannot be built without roots).
        Arc::new(refuse::RefuseAll(provider()))
    } else {
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError {
                file: "tls".into(),
                reason: e.to_string(),
            })?
    };
    let server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(bad)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Fixed(key.clone())));
    Ok(Configs {
        trust,
        key,
        roots,
        until: trusted.until,
        client: Arc::new(client),
        server: Arc::new(server),
    })
}

/// Presents one certified key as a client.
#[derive(Debug)]
struct FixedClient(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClient {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Serves one certified key.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// How many CAs a restriction left trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restricted {
    pub trusted: usize,
    pub of: usize,
}

impl PeerTls {
    /// Loads and checks this node's material.
    pub fn new(node_id: &str, files: TlsFiles) -> Result<PeerTls, TlsError> {
        let m = Material::load(&files, node_id)?;
        let configs = build(Trust::new(m.cas), m.key, unix_now())?;
        Ok(PeerTls {
            node_id: node_id.to_string(),
            files,
            current: RwLock::new(Arc::new(configs)),
        })
    }

    /// What is in force now; rebuilt first when a CA's validity changed
    /// since it was built (a CA that expires stops being trusted).
    fn now(&self) -> Arc<Configs> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let now = unix_now();
        if now < current.until {
            return current;
        }
        let mut slot = self.current.write().unwrap_or_else(|p| p.into_inner());
        if now >= slot.until {
            let rebuilt = match build(slot.trust.clone(), slot.key.clone(), now) {
                Ok(c) => c,
                // Cannot happen (the same build succeeded before); the
                // roots change anyway, which every check after a
                // handshake uses.
                Err(e) => {
                    log::error!("cannot rebuild the TLS configurations: {e}");
                    let roots = slot.trust.roots_at(now);
                    Configs {
                        trust: slot.trust.clone(),
                        key: slot.key.clone(),
                        roots: Arc::new(roots.store),
                        until: roots.until,
                        client: slot.client.clone(),
                        server: slot.server.clone(),
                    }
                }
            };
            let left = rebuilt.trust.roots_at(now);
            log::warn!(
                "the CAs trusted in {} changed with time (a CA expired or became valid): \
                 {} of {} trusted now",
                self.files.ca.display(),
                left.trusted,
                left.of
            );
            *slot = Arc::new(rebuilt);
        }
        slot.clone()
    }

    /// Loads the files again; swaps them in only if they pass every check
    /// (which lifts a restriction of [`PeerTls::restrict_to_ca_file`]).
    pub fn reload(&self) -> Result<(), TlsError> {
        let m = Material::load(&self.files, &self.node_id)?;
        let configs = build(Trust::new(m.cas), m.key, unix_now())?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(configs);
        Ok(())
    }

    /// After a failed reload of a changed CA bundle: trusts only the CAs of
    /// the bundle in force that the new file still holds, as far as it
    /// parses (none if it cannot be read). The key in force stays.
    pub fn restrict_to_ca_file(&self) -> Restricted {
        let newest = bundle::read_bounded(&self.files.ca)
            .map(|pem| bundle::parse_lenient(&pem))
            .unwrap_or_default();
        let mut slot = self.current.write().unwrap_or_else(|p| p.into_inner());
        let trust = slot.trust.restricted_to(&newest);
        let now = unix_now();
        let roots = trust.roots_at(now);
        let left = Restricted {
            trusted: roots.trusted,
            of: roots.of,
        };
        let configs = build(trust.clone(), slot.key.clone(), now).unwrap_or_else(|e| {
            log::error!("cannot rebuild the TLS configurations: {e}");
            Configs {
                trust,
                key: slot.key.clone(),
                roots: Arc::new(roots.store),
                until: roots.until,
                client: slot.client.clone(),
                server: slot.server.clone(),
            }
        });
        *slot = Arc::new(configs);
        left
    }

    /// Whether trust is restricted by a failing reload of the CA bundle.
    pub fn is_restricted(&self) -> bool {
        self.now().trust.is_restricted()
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration for dialing peers.
    pub fn client(&self) -> Arc<ClientConfig> {
        self.now().client.clone()
    }

    /// The configuration for accepting peers (client certificates required).
    pub fn server(&self) -> Arc<ServerConfig> {
        self.now().server.clone()
    }

    /// The CA roots in force: valid now, and not removed by a failing
    /// reload of a changed bundle.
    pub fn roots(&self) -> Arc<RootCertStore> {
        self.now().roots.clone()
    }

    /// The certified key in force (also what the HTTPS port serves).
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.now().key.clone()
    }
}

/// Serves the current certificate of a [`PeerTls`] (for the HTTPS port), so
/// a reload takes effect for the next handshake.
#[derive(Debug)]
pub struct CurrentCert(pub Arc<PeerTls>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }
}

/// A certificate of its own for the HTTPS port (when it is not the node's
/// peer certificate): a readable PEM pair that matches, valid now;
/// reloadable like [`PeerTls`]. Its issuer is the operator's business
/// (clients check it), so it need not chain to the cluster CA.
#[derive(Debug)]
pub struct ServedCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServedCert {
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<ServedCert, TlsError> {
        let current = RwLock::new(Arc::new(load_pair(&cert, &key)?));
        Ok(ServedCert { cert, key, current })
    }

    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = load_pair(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(pair);
        Ok(())
    }

    /// The certificate and key files.
    pub fn files(&self) -> [PathBuf; 2] {
        [self.cert.clone(), self.key.clone()]
    }

    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for ServedCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }
}

/// Reads a certificate chain and its key; checks they match and that the
/// certificate is valid now.
fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| err(p, format!("cannot read: {e}")));
    let cert_pem = read(cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| err(cert, format!("not a PEM certificate: {e}")))?;
    let end = chain
        .first()
        .ok_or_else(|| err(cert, "holds no certificate"))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(end)
        .map_err(|e| err(cert, format!("not a certificate: {e}")))?;
    let validity = parsed.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > validity.not_after {
        return Err(err(cert, "the certificate has expired"));
    }
    if now < validity.not_before {
        return Err(err(cert, "the certificate is not valid yet"));
    }
    let key_pem = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| err(key, format!("not a PEM private key: {e}")))?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|e| err(key, mismatch(cert, e)))
}

/// An HTTPS server configuration serving what `resolver` resolves (the
/// current certificate, so a reload takes effect for the next handshake),
/// without client certificates (clients authenticate with tokens).
pub fn https_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<ServerConfig, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError {
            file: "tls".into(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

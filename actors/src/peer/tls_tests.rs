//! Mutual TLS between peers with real certificates: who is let in, who is
//! not, and how material is checked and reloaded.

use super::handshake::{admissible, check_origin, RECHECK};
use super::tls::{verify_identity, Material, PeerTls, Restricted, TlsFiles};
use super::*;
use crate::certgen::{Ca, KeyUse, NodeNames, Validity};
use crate::wire::{Request, Response, WireRecord, PROTOCOL_VERSION};
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(5);

fn names() -> NodeNames {
    NodeNames {
        ips: vec!["127.0.0.1".parse().unwrap()],
        dns: vec![],
    }
}

/// Writes `ca.crt` and, per node, `<id>.crt` / `<id>.key` into `dir`.
fn write_certs(dir: &Path, ca: &Ca, ca_pem: &str, nodes: &[&str]) {
    std::fs::write(dir.join("ca.crt"), ca_pem).unwrap();
    for id in nodes {
        let issued = ca.issue_node(id, &names(), Validity::days(1)).unwrap();
        std::fs::write(dir.join(format!("{id}.crt")), issued.cert_pem).unwrap();
        std::fs::write(dir.join(format!("{id}.key")), issued.key_pem).unwrap();
    }
}

fn files(dir: &Path, id: &str) -> TlsFiles {
    TlsFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join(format!("{id}.crt")),
        key: dir.join(format!("{id}.key")),
    }
}

/// A cluster CA with certificates for a, b and c in a temporary directory.
fn cluster() -> (tempfile::TempDir, Ca) {
    cluster_of_ca(Validity::days(30))
}

/// As [`cluster`], the CA valid for `validity` (node certificates a day).
fn cluster_of_ca(validity: Validity) -> (tempfile::TempDir, Ca) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, issued) = Ca::generate("t", validity).unwrap();
    write_certs(dir.path(), &ca, &issued.cert_pem, &["a", "b", "c"]);
    (dir, ca)
}

fn settings(me: &str, tls: Option<Arc<PeerTls>>) -> Arc<PeerSettings> {
    Arc::new(PeerSettings {
        hello: Hello {
            cluster: "t".into(),
            protocol: PROTOCOL_VERSION,
            node_id: me.into(),
            layout: 0,
        },
        max_frame: 1 << 20,
        members: Arc::new(["a", "b", "c"].iter().map(|s| s.to_string()).collect()),
        max_value: 1 << 16,
        faults: Arc::default(),
        tls,
        addresses: Arc::default(),
    })
}

fn tls_of(dir: &Path, id: &str) -> Arc<PeerTls> {
    Arc::new(PeerTls::new(id, files(dir, id)).unwrap())
}

/// Answers a read with the name of the node that asked.
struct WhoAsked;

impl Dispatch for WhoAsked {
    fn dispatch(&self, from: Rc<str>, _: Request) -> LocalBoxFuture<'static, Response> {
        Box::pin(async move {
            Response::Read {
                record: Some(WireRecord {
                    ts: 1,
                    node: 1,
                    value: Some(Bytes::copy_from_slice(from.as_bytes())),
                }),
            }
        })
    }
}

async fn serve(settings: Arc<PeerSettings>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::task::spawn_local(PeerServer::new(settings, Rc::new(WhoAsked)).run(listener));
    addr
}

fn read() -> Request {
    Request::Read {
        key: Bytes::from_static(b"k"),
    }
}

/// A client of `target` at `addr`, its connection task running.
fn spawn_client(
    addr: std::net::SocketAddr,
    target: &str,
    settings: Arc<PeerSettings>,
) -> PeerClient {
    let (client, run) = PeerClient::new(
        target.into(),
        addr,
        settings,
        Arc::new(AtomicBool::new(false)),
    );
    tokio::task::spawn_local(run);
    client
}

/// Dials `target` at `addr` with `settings`; answers whether a call got
/// through within a couple of seconds, and what the server saw us as.
async fn try_call(
    addr: std::net::SocketAddr,
    target: &str,
    settings: Arc<PeerSettings>,
) -> Option<String> {
    let client = spawn_client(addr, target, settings);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        if client.is_connected() {
            let answer = client.call(read(), T).await.ok()?;
            client.shutdown();
            return match answer {
                Response::Read {
                    record: Some(WireRecord { value: Some(v), .. }),
                } => Some(String::from_utf8_lossy(&v).into_owned()),
                _ => None,
            };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.shutdown();
    None
}

#[actix::test]
async fn members_with_certificates_of_the_cluster_ca_talk() {
    let (dir, _) = cluster();
    let addr = serve(settings("b", Some(tls_of(dir.path(), "b")))).await;
    let who = try_call(addr, "b", settings("a", Some(tls_of(dir.path(), "a")))).await;
    assert_eq!(who.as_deref(), Some("a"));
}

#[actix::test]
async fn a_peer_without_a_certificate_is_refused() {
    let (dir, _) = cluster();
    let addr = serve(settings("b", Some(tls_of(dir.path(), "b")))).await;
    assert_eq!(try_call(addr, "b", settings("a", None)).await, None);
    // Nor does raw TCP speaking the hello get an answer.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let hello = crate::wire::encode_frame(
        &crate::wire::Frame::Hello(settings("a", None).hello.clone()),
        4096,
    )
    .unwrap();
    let _ = raw.write_all(&hello).await;
    // The answer is a TLS alert (content type 0x15) or nothing; a hello
    // frame would start with its length prefix's zero byte.
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(T, raw.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(
        n == 0 || buf[0] == 0x15,
        "a plaintext hello got {:?}",
        &buf[..n]
    );
}

#[actix::test]
async fn a_certificate_of_another_ca_is_refused() {
    let (dir, _) = cluster();
    let (other, _) = cluster();
    let addr = serve(settings("b", Some(tls_of(dir.path(), "b")))).await;
    // A complete cluster of another CA: its "a" is refused by our b.
    let who = try_call(addr, "b", settings("a", Some(tls_of(other.path(), "a")))).await;
    assert_eq!(who, None);
    // Our CA's bundle with another CA's certificate does not even load.
    std::fs::copy(dir.path().join("ca.crt"), other.path().join("ca.crt")).unwrap();
    let e = PeerTls::new("a", files(other.path(), "a")).unwrap_err();
    assert!(e.reason.contains("does not chain to the cluster CA"), "{e}");
}

#[actix::test]
async fn a_valid_certificate_cannot_claim_another_member() {
    let (dir, _) = cluster();
    let addr = serve(settings("b", Some(tls_of(dir.path(), "b")))).await;
    // c's certificate, hello saying "a".
    let c_as_a = Arc::new(PeerTls::new("c", files(dir.path(), "c")).unwrap());
    assert_eq!(try_call(addr, "b", settings("a", Some(c_as_a))).await, None);
    // The honest c is welcome.
    let who = try_call(addr, "b", settings("c", Some(tls_of(dir.path(), "c")))).await;
    assert_eq!(who.as_deref(), Some("c"));
}

#[actix::test]
async fn the_dialer_refuses_a_listener_that_is_not_the_node_it_dialed() {
    let (dir, _) = cluster();
    // c's certificate listens where we expect b, and its hello even says
    // "b": only the certificate gives it away.
    let addr = serve(settings("b", Some(tls_of(dir.path(), "c")))).await;
    assert_eq!(
        try_call(addr, "b", settings("a", Some(tls_of(dir.path(), "a")))).await,
        None
    );
    // The same listener with b's certificate is reached.
    let addr = serve(settings("b", Some(tls_of(dir.path(), "b")))).await;
    let who = try_call(addr, "b", settings("a", Some(tls_of(dir.path(), "a")))).await;
    assert_eq!(who.as_deref(), Some("a"));
}

#[test]
fn a_wildcard_certificate_speaks_for_no_node() {
    let (dir, ca) = cluster();
    let d = dir.path();
    let wild = ca
        .issue(
            "wild",
            &["*.node.ringkv".to_string()],
            &names().ips,
            &[KeyUse::ServerAuth, KeyUse::ClientAuth],
            Validity::days(1),
        )
        .unwrap();
    std::fs::write(d.join("a.crt"), &wild.cert_pem).unwrap();
    std::fs::write(d.join("a.key"), &wild.key_pem).unwrap();
    let e = Material::load(&files(d, "a"), "a").unwrap_err().to_string();
    assert!(e.contains("wildcards do not count"), "{e}");
    // Nor does a peer presenting it pass the identity check.
    let chain: Vec<_> = CertificateDer::pem_slice_iter(wild.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let roots = PeerTls::new("b", files(d, "b")).unwrap().roots();
    for id in ["a", "b", "c"] {
        assert!(verify_identity(&roots, &chain, id, UnixTime::now()).is_err());
    }
}

fn with_addresses(me: &str, addresses: &[(&str, &str)]) -> PeerSettings {
    let mut s = (*settings(me, None)).clone();
    s.addresses = Arc::new(
        addresses
            .iter()
            .map(|(id, a)| (id.to_string(), a.parse().unwrap()))
            .collect(),
    );
    s
}

#[test]
fn a_member_speaks_only_from_its_own_address() {
    let s = with_addresses(
        "a",
        &[
            ("a", "10.9.9.1:7000"),
            ("b", "10.9.9.2:7000"),
            ("c", "10.9.9.2:7001"),
        ],
    );
    let from = |a: &str| a.parse::<std::net::SocketAddr>().unwrap();
    assert!(check_origin(&s, "b", from("10.9.9.2:40000")).is_ok());
    // c's valid certificate and hello, from elsewhere: refused.
    let e = check_origin(&s, "c", from("127.0.0.1:40000")).unwrap_err();
    assert!(e.contains("cannot speak for c"), "{e}");
    // An IPv4 peer seen through a dual-stack listener is the same address.
    assert!(check_origin(&s, "b", from("[::ffff:10.9.9.2]:40000")).is_ok());
    // Before any handshake: strangers take no slot; each member IP has two
    // per member configured at it.
    assert!(admissible(&s, from("10.0.0.66:1")).is_err());
    assert_eq!(admissible(&s, from("10.9.9.1:1")), Ok(2));
    assert_eq!(admissible(&s, from("[::ffff:10.9.9.2]:1")), Ok(4));
    // A wildcard member address admits anyone, a few at a time.
    let open = with_addresses("a", &[("a", "10.9.9.1:7000"), ("b", "0.0.0.0:7000")]);
    assert!(check_origin(&open, "b", from("10.0.0.66:1")).is_ok());
    assert_eq!(admissible(&open, from("10.0.0.66:1")), Ok(4));
}

#[actix::test]
async fn during_a_ca_rotation_members_of_both_cas_talk() {
    let (dir, _) = cluster();
    let d = dir.path();
    let (new_ca, new_pem) = Ca::generate("t", Validity::days(30)).unwrap();
    let old_pem = std::fs::read_to_string(d.join("ca.crt")).unwrap();
    std::fs::write(d.join("ca.crt"), format!("{old_pem}{}", new_pem.cert_pem)).unwrap();
    // a moved to the new CA; b still has the old one's certificate.
    let issued = new_ca.issue_node("a", &names(), Validity::days(1)).unwrap();
    std::fs::write(d.join("a.crt"), issued.cert_pem).unwrap();
    std::fs::write(d.join("a.key"), issued.key_pem).unwrap();
    let addr = serve(settings("b", Some(tls_of(d, "b")))).await;
    let who = try_call(addr, "b", settings("a", Some(tls_of(d, "a")))).await;
    assert_eq!(who.as_deref(), Some("a"), "new-CA a to old-CA b");
    let addr = serve(settings("a", Some(tls_of(d, "a")))).await;
    let who = try_call(addr, "a", settings("b", Some(tls_of(d, "b")))).await;
    assert_eq!(who.as_deref(), Some("b"), "old-CA b to new-CA a");
}

/// Connects `me` to `target` and waits for the connection.
async fn connected(
    addr: std::net::SocketAddr,
    target: &str,
    settings: Arc<PeerSettings>,
) -> PeerClient {
    let client = spawn_client(addr, target, settings);
    let started = Instant::now();
    while !client.is_connected() {
        assert!(started.elapsed() < T, "never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.call(read(), T).await.expect("a call gets through");
    client
}

/// Waits until `client` has lost its connection for good (a second of no
/// connection and a failing call).
async fn cut_off(client: &PeerClient, within: Duration) {
    let started = Instant::now();
    let mut since: Option<Instant> = None;
    loop {
        assert!(started.elapsed() < within, "the session was not cut");
        if client.is_connected() {
            since = None;
        } else if since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(client
        .call(read(), Duration::from_millis(500))
        .await
        .is_err());
    client.shutdown();
}

#[actix::test]
async fn open_sessions_end_when_the_ca_bundle_drops_their_ca() {
    let (dir, _) = cluster();
    let d = dir.path();
    let (new_ca, new_pem) = Ca::generate("t", Validity::days(30)).unwrap();
    let old_pem = std::fs::read_to_string(d.join("ca.crt")).unwrap();
    std::fs::write(d.join("ca.crt"), format!("{old_pem}{}", new_pem.cert_pem)).unwrap();
    let b = tls_of(d, "b");
    let addr = serve(settings("b", Some(b.clone()))).await;
    // a still holds an old-CA certificate (say, a node being cast out).
    let a = connected(addr, "b", settings("a", Some(tls_of(d, "a")))).await;
    // b finishes the rotation: new certificate, bundle of the new CA only.
    let issued = new_ca.issue_node("b", &names(), Validity::days(1)).unwrap();
    std::fs::write(d.join("b.crt"), issued.cert_pem).unwrap();
    std::fs::write(d.join("b.key"), issued.key_pem).unwrap();
    std::fs::write(d.join("ca.crt"), &new_pem.cert_pem).unwrap();
    b.reload().unwrap();
    cut_off(&a, RECHECK * 3 + Duration::from_secs(2)).await;
}

#[actix::test]
async fn a_certificate_that_expires_in_use_ends_its_session() {
    let (dir, ca) = cluster();
    let d = dir.path();
    let short = ca.issue_node("a", &names(), Validity::seconds(3)).unwrap();
    std::fs::write(d.join("a.crt"), short.cert_pem).unwrap();
    std::fs::write(d.join("a.key"), short.key_pem).unwrap();
    let addr = serve(settings("b", Some(tls_of(d, "b")))).await;
    let a = connected(addr, "b", settings("a", Some(tls_of(d, "a")))).await;
    cut_off(
        &a,
        Duration::from_secs(3) + RECHECK * 3 + Duration::from_secs(2),
    )
    .await;
}

#[test]
fn bad_material_is_refused_naming_the_file_and_the_reason() {
    let (dir, ca) = cluster();
    let d = dir.path();
    let err = |f: TlsFiles, id: &str| Material::load(&f, id).unwrap_err().to_string();
    // Missing.
    let mut f = files(d, "a");
    f.cert = d.join("nope.crt");
    let e = err(f, "a");
    assert!(e.contains("nope.crt") && e.contains("cannot read"), "{e}");
    // Another node's certificate.
    let e = err(files(d, "b"), "a");
    assert!(
        e.contains("b.crt") && e.contains("does not name node a"),
        "{e}"
    );
    // Key of another certificate.
    let mut f = files(d, "a");
    f.key = d.join("b.key");
    let e = err(f, "a");
    assert!(e.contains("b.key") && e.contains("does not match"), "{e}");
    // Expired.
    let old = ca.issue_node("a", &names(), Validity::expired()).unwrap();
    std::fs::write(d.join("old.crt"), old.cert_pem).unwrap();
    std::fs::write(d.join("old.key"), old.key_pem).unwrap();
    let f = TlsFiles {
        ca: d.join("ca.crt"),
        cert: d.join("old.crt"),
        key: d.join("old.key"),
    };
    let e = err(f, "a");
    assert!(e.contains("old.crt") && e.contains("expired"), "{e}");
    // Garbage.
    std::fs::write(d.join("junk.crt"), "not a certificate").unwrap();
    let mut f = files(d, "a");
    f.ca = d.join("junk.crt");
    let e = err(f, "a");
    assert!(e.contains("junk.crt"), "{e}");
}

#[test]
fn reload_swaps_in_good_material_and_keeps_the_old_on_bad() {
    let (dir, ca) = cluster();
    let d = dir.path();
    let tls = PeerTls::new("a", files(d, "a")).unwrap();
    let before = tls.certified_key().cert[0].clone();
    // A half-written rotation (new key, old certificate) is refused.
    let renewed = ca.issue_node("a", &names(), Validity::days(2)).unwrap();
    std::fs::write(d.join("a.key"), &renewed.key_pem).unwrap();
    assert!(tls.reload().is_err());
    assert_eq!(tls.certified_key().cert[0], before);
    std::fs::write(d.join("a.crt"), &renewed.cert_pem).unwrap();
    tls.reload().unwrap();
    assert_ne!(tls.certified_key().cert[0], before);
}

#[test]
fn a_ca_bundle_accepts_certificates_of_both_cas_during_a_ca_rotation() {
    let (dir, _) = cluster();
    let d = dir.path();
    let (new_ca, new_pem) = Ca::generate("t", Validity::days(30)).unwrap();
    let old_pem = std::fs::read_to_string(d.join("ca.crt")).unwrap();
    std::fs::write(d.join("ca.crt"), format!("{old_pem}{}", new_pem.cert_pem)).unwrap();
    assert!(
        PeerTls::new("a", files(d, "a")).is_ok(),
        "old CA's certificate"
    );
    let issued = new_ca.issue_node("a", &names(), Validity::days(1)).unwrap();
    std::fs::write(d.join("a.crt"), issued.cert_pem).unwrap();
    std::fs::write(d.join("a.key"), issued.key_pem).unwrap();
    assert!(
        PeerTls::new("a", files(d, "a")).is_ok(),
        "new CA's certificate"
    );
    // A CA reloaded from its files issues certificates that chain to it.
    let ca_key = new_pem.key_pem.clone();
    let again = Ca::load(&new_pem.cert_pem, &ca_key).unwrap();
    let issued = again.issue_node("b", &names(), Validity::days(1)).unwrap();
    std::fs::write(d.join("b.crt"), issued.cert_pem).unwrap();
    std::fs::write(d.join("b.key"), issued.key_pem).unwrap();
    assert!(PeerTls::new("b", files(d, "b")).is_ok());
}

#[test]
fn an_expired_or_not_yet_valid_ca_refuses_to_load_naming_it() {
    // webpki would accept these: it does not look at a trust anchor's
    // validity, only at the certificates it issued (valid a day here).
    let (dir, _) = cluster_of_ca(Validity::expired());
    let e = Material::load(&files(dir.path(), "a"), "a")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ca.crt") && e.contains("has expired") && e.contains("ringkv CA t"),
        "{e}"
    );
    let now = time::OffsetDateTime::now_utc();
    let (dir, _) = cluster_of_ca(Validity {
        not_before: now + time::Duration::days(1),
        not_after: now + time::Duration::days(2),
    });
    let e = PeerTls::new("a", files(dir.path(), "a")).unwrap_err();
    assert!(e.reason.contains("not valid yet"), "{e}");
    // Nor does a reload swap one in.
    let (dir, _) = cluster();
    let tls = PeerTls::new("a", files(dir.path(), "a")).unwrap();
    let (expired, _) = cluster_of_ca(Validity::expired());
    for f in ["ca.crt", "a.crt", "a.key"] {
        std::fs::copy(expired.path().join(f), dir.path().join(f)).unwrap();
    }
    assert!(tls.reload().unwrap_err().reason.contains("has expired"));
}

#[actix::test]
async fn a_ca_that_expires_in_use_stops_being_trusted() {
    let (dir, _) = cluster_of_ca(Validity::seconds(3));
    let d = dir.path();
    let b = tls_of(d, "b");
    let a_tls = tls_of(d, "a");
    let addr = serve(settings("b", Some(b.clone()))).await;
    let a = connected(addr, "b", settings("a", Some(a_tls.clone()))).await;
    assert_eq!(b.roots().len(), 1);
    cut_off(
        &a,
        Duration::from_secs(3) + RECHECK * 3 + Duration::from_secs(2),
    )
    .await;
    assert!(b.roots().is_empty(), "the expired CA is still trusted");
    // Nor does a new connection get in, and the files no longer load.
    assert_eq!(try_call(addr, "b", settings("a", Some(a_tls))).await, None);
    assert!(b.reload().unwrap_err().reason.contains("has expired"));
}

#[actix::test]
async fn a_changed_bundle_that_cannot_load_trusts_only_the_cas_still_in_it() {
    let (dir, _) = cluster();
    let d = dir.path();
    let (new_ca, new_pem) = Ca::generate("t", Validity::days(30)).unwrap();
    let old_pem = std::fs::read_to_string(d.join("ca.crt")).unwrap();
    std::fs::write(d.join("ca.crt"), format!("{old_pem}{}", new_pem.cert_pem)).unwrap();
    let b = tls_of(d, "b");
    let addr = serve(settings("b", Some(b.clone()))).await;
    // a holds an old-CA certificate; c moved to the new CA.
    let a = connected(addr, "b", settings("a", Some(tls_of(d, "a")))).await;
    let issued = new_ca.issue_node("c", &names(), Validity::days(1)).unwrap();
    std::fs::write(d.join("c.crt"), issued.cert_pem).unwrap();
    std::fs::write(d.join("c.key"), issued.key_pem).unwrap();
    let c = tls_of(d, "c");
    // The rotation's new bundle (the new CA only) is caught half-written.
    std::fs::write(
        d.join("ca.crt"),
        format!("{}-----BEGIN CERTIFICATE-----\nMIIB", new_pem.cert_pem),
    )
    .unwrap();
    assert!(b.reload().is_err());
    assert_eq!(b.restrict_to_ca_file(), Restricted { trusted: 1, of: 2 });
    assert!(b.is_restricted());
    assert_eq!(b.roots().len(), 1);
    // The old CA's open session is cut within seconds...
    cut_off(&a, RECHECK * 3 + Duration::from_secs(2)).await;
    assert_eq!(
        try_call(addr, "b", settings("a", Some(tls_of_old(&old_pem, d)))).await,
        None
    );
    // ... while the new CA's member talks.
    let who = try_call(addr, "b", settings("c", Some(c.clone()))).await;
    assert_eq!(who.as_deref(), Some("c"));
    // An unreadable bundle removes all trust.
    std::fs::remove_file(d.join("ca.crt")).unwrap();
    assert_eq!(b.restrict_to_ca_file().trusted, 0);
    assert!(b.roots().is_empty());
    assert_eq!(
        try_call(addr, "b", settings("c", Some(c.clone()))).await,
        None
    );
    // The finished rotation loads and lifts the restriction.
    std::fs::write(d.join("ca.crt"), &new_pem.cert_pem).unwrap();
    let issued = new_ca.issue_node("b", &names(), Validity::days(1)).unwrap();
    std::fs::write(d.join("b.crt"), issued.cert_pem).unwrap();
    std::fs::write(d.join("b.key"), issued.key_pem).unwrap();
    b.reload().unwrap();
    assert!(!b.is_restricted());
    let who = try_call(addr, "b", settings("c", Some(c))).await;
    assert_eq!(who.as_deref(), Some("c"));
}

/// `a`'s (old-CA) material, trusting the old CA only (the shared bundle
/// file is broken meanwhile).
fn tls_of_old(old_pem: &str, d: &Path) -> Arc<PeerTls> {
    let old = d.join("old-ca.crt");
    std::fs::write(&old, old_pem).unwrap();
    let mut f = files(d, "a");
    f.ca = old;
    Arc::new(PeerTls::new("a", f).unwrap())
}

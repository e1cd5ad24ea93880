//! Mutual TLS between peers with real certificates: who is let in, who is
//! not, and how material is checked and reloaded.

use super::tls::{Material, PeerTls, TlsFiles};
use super::*;
use crate::certgen::{Ca, NodeNames, Validity};
use crate::wire::{Request, Response, WireRecord, PROTOCOL_VERSION};
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
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
    let dir = tempfile::tempdir().unwrap();
    let (ca, issued) = Ca::generate("t", Validity::days(30)).unwrap();
    write_certs(dir.path(), &ca, &issued.cert_pem, &["a", "b", "c"]);
    (dir, ca)
}

fn settings(me: &str, tls: Option<Arc<PeerTls>>) -> Arc<PeerSettings> {
    Arc::new(PeerSettings {
        hello: Hello {
            cluster: "t".into(),
            protocol: PROTOCOL_VERSION,
            node_id: me.into(),
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

/// Dials `target` at `addr` with `settings`; answers whether a call got
/// through within a couple of seconds, and what the server saw us as.
async fn try_call(
    addr: std::net::SocketAddr,
    target: &str,
    settings: Arc<PeerSettings>,
) -> Option<String> {
    let (client, run) = PeerClient::new(
        target.into(),
        addr,
        settings,
        Arc::new(AtomicBool::new(false)),
    );
    tokio::task::spawn_local(run);
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
    // c listens where we expect b.
    let addr = serve(settings("c", Some(tls_of(dir.path(), "c")))).await;
    assert_eq!(
        try_call(addr, "b", settings("a", Some(tls_of(dir.path(), "a")))).await,
        None
    );
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

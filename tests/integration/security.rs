//! Step 07: authenticated and encrypted peers, HTTPS and tokens for clients.
//!
//! * Peers: no certificate, a certificate of another CA, a valid certificate
//!   claiming another member, a certificate of a non-member — all refused
//!   and none changes data; forged gossip about another member over a valid
//!   connection is ignored.
//! * Clients: each role / prefix combination gets 200, 401 or 403 as the
//!   README promises; brute force is throttled per address; revocation and
//!   new tokens take effect without a restart; no secret or value in logs.
//! * Certificates: rotation under load loses no request; a bad file on
//!   reload keeps the one in force; a missing, expired or mismatched
//!   certificate, or an expired CA, refuses start, naming the file.
//! * Reloads that fail are retried every second and fail closed: a changed
//!   tokens file that cannot load refuses every token (503) until it does;
//!   a CA bundle caught half-written during a rotation never keeps the CA
//!   being removed trusted.
//! * `ringkv up` makes the certificates and prints an admin token.

use crate::harness::metric;
use crate::harness::{
    kv_at, run_bin, wait_until, Client, Cluster, ClusterSpec, Poll, HTTP_TIMEOUT,
};
use crate::hostile::{entry, Raw};
use crate::peer_conn::PeerConn;
use ringkv_actors::certgen::{Ca, NodeNames, Validity};
use ringkv_actors::wire::{
    encode_frame, Frame, Hello, Request, Response, WireRecord, PROTOCOL_VERSION,
};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A hello as `id` and a write of `key`, as one burst of bytes.
fn hello_and_write(id: &str, key: &str) -> Vec<u8> {
    let hello = Frame::Hello(Hello {
        cluster: "itest".into(),
        protocol: PROTOCOL_VERSION,
        node_id: id.into(),
        layout: 0,
    });
    let write = Frame::Request {
        id: 1,
        body: Request::Write {
            layout: 0,
            key: bytes::Bytes::copy_from_slice(key.as_bytes()),
            record: WireRecord {
                ts: (now_ms() << 16) | 1,
                node: 99,
                value: Some(bytes::Bytes::from_static(b"intruder")),
            },
        },
    };
    let mut out = encode_frame(&hello, 4096).unwrap().to_vec();
    out.extend_from_slice(&encode_frame(&write, 1 << 20).unwrap());
    out
}

/// Sends `bytes` and reads until the node closes the connection; answers
/// what came back (decrypted, for TLS). Panics if it stays open.
fn refused(mut conn: PeerConn, bytes: &[u8], what: &str) -> Vec<u8> {
    conn.set_read_timeout(Some(Duration::from_millis(300)));
    let _ = conn.write_all(bytes);
    let _ = conn.flush();
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return got, // reset, TLS alert, EOF without close_notify
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the connection stayed open (got {} bytes)",
            got.len()
        );
    }
}

fn assert_untouched(c: &Cluster, key: &str) {
    for node in &c.nodes {
        assert!(
            node.local(key).is_none(),
            "{}: {key} was stored by an intruder",
            node.id
        );
    }
}

fn log_has(c: &Cluster, i: usize, needle: &str) {
    c.wait_until(
        Duration::from_secs(5),
        &format!("the log says {needle:?}"),
        || {
            if c.node(i).log().contains(needle) {
                Poll::Ready(())
            } else {
                Poll::Pending(String::new())
            }
        },
    );
}

#[test]
fn peers_without_a_member_certificate_are_refused_and_change_nothing() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3));
    c.wait_replicas_reachable();
    let target = c.node(0).peer_addr;

    // 1. No TLS at all: a plaintext hello and write.
    let plain = PeerConn::Plain(std::net::TcpStream::connect(target).unwrap());
    let got = refused(plain, &hello_and_write("n2", "no-cert"), "plaintext");
    assert!(
        got.is_empty() || got[0] == 0x15,
        "plaintext got a non-TLS answer {got:02x?}"
    );

    // 2. A certificate for n2 from another CA (the client trusts our CA, so
    //    only the node's check can stop it).
    let other = tempfile::tempdir().unwrap();
    let (ca, _) = Ca::generate("itest", Validity::days(1)).unwrap();
    let names = NodeNames {
        ips: vec!["127.0.0.1".parse().unwrap()],
        dns: vec![],
    };
    let fake = ca.issue_node("n2", &names, Validity::days(1)).unwrap();
    let roots_pem = std::fs::read(c.dir.path().join("certs/ca.crt")).unwrap();
    let config = foreign_client(&roots_pem, &fake.cert_pem, &fake.key_pem);
    drop(other);
    let conn = PeerConn::tls(target, "n1", config);
    let got = refused(conn, &hello_and_write("n2", "other-ca"), "another CA");
    assert!(got.is_empty(), "another CA got an answer: {got:02x?}");

    // 3. n3's valid certificate, hello claiming n2.
    let conn = PeerConn::connect(&c, 0, "n3");
    let got = refused(conn, &hello_and_write("n2", "wrong-id"), "n3 as n2");
    assert!(got.is_empty(), "an impostor got an answer: {got:02x?}");
    log_has(&c, 0, "its certificate cannot speak for n2");

    // 4. A certificate of our CA for a node that is not a member.
    let ours = Ca::load(
        &String::from_utf8(roots_pem.clone()).unwrap(),
        &std::fs::read_to_string(c.dir.path().join("certs/ca.key")).unwrap(),
    )
    .unwrap();
    let stranger = ours.issue_node("n9", &names, Validity::days(1)).unwrap();
    let config = foreign_client(&roots_pem, &stranger.cert_pem, &stranger.key_pem);
    let conn = PeerConn::tls(target, "n1", config);
    let got = refused(conn, &hello_and_write("n9", "stranger"), "non-member");
    assert!(got.is_empty(), "a stranger got an answer: {got:02x?}");
    log_has(&c, 0, "'n9' is not a member");

    for key in ["no-cert", "other-ca", "wrong-id", "stranger"] {
        assert_untouched(&c, key);
    }
    // The members themselves still talk.
    let r = c.node(0).client().put(&kv_at("after", Some("all")), b"ok");
    assert_eq!(r.status, 201, "{r}");
}

/// Raises this process's soft limit of open files to `want` (at most the
/// hard limit).
fn raise_open_files(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Strangers that open peer connections and never say a word (from an IP
/// that is no member's) hold none of the handshake slots members need: a
/// member restarted under such a flood reconnects at once.
#[test]
fn strangers_stalling_handshakes_do_not_lock_members_out() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3));
    c.wait_replicas_reachable();
    let target = c.node(0).peer_addr;
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    raise_open_files(4096);
    let flood = {
        let (stop, opened) = (stop.clone(), opened.clone());
        std::thread::spawn(move || {
            let mut held = std::collections::VecDeque::new();
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                s.bind(&std::net::SocketAddr::from(([127, 0, 0, 2], 0)).into())
                    .unwrap();
                if s.connect_timeout(&target.into(), Duration::from_secs(1))
                    .is_ok()
                {
                    opened.fetch_add(1, Ordering::Relaxed);
                    held.push_back(s);
                    // Each held ~6 s: longer than a handshake slot lasts.
                    if held.len() > 3000 {
                        held.pop_front();
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    // Every member handshake gets through the flood.
    for i in 0..10 {
        if let Err(why) = Raw::try_connect(&c, 0, "n3") {
            panic!("member handshake {i} during the flood: {why}");
        }
    }
    c.node_mut(1).kill9();
    crate::faults::wait_member(&c, 0, "n2", "down");
    c.node_mut(1).start();
    // n2 must dial n1 through the flood for n2 to see n1 and write to it.
    crate::faults::wait_member(&c, 1, "n1", "up");
    let wrote = c.wait_until(Duration::from_secs(10), "a write at all through n2", || {
        let r = c
            .node(1)
            .client()
            .put(&kv_at("through-the-flood", Some("all")), b"ok");
        if r.status == 201 || r.status == 204 {
            Poll::Ready(r.status)
        } else {
            Poll::Pending(r.to_string())
        }
    });
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    assert!(wrote == 201 || wrote == 204);
    assert!(
        opened.load(Ordering::Relaxed) >= 50,
        "the flood did not run"
    );
    log_has(&c, 0, "127.0.0.2 is not the address of any member");
}

/// A client configuration trusting `roots_pem`, presenting `cert_pem`.
fn foreign_client(roots_pem: &[u8], cert_pem: &str, key_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap(),
    )
}

/// Gossip about n3 sent by n2 over n2's own authenticated connection —
/// plausible values, a restart of n3 — is ignored: only n3 speaks for n3.
#[test]
fn forged_gossip_about_another_member_is_ignored() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3));
    c.wait_replicas_reachable();
    let n3_before = crate::faults::wait_converged(&c, 0, 2);
    let refused_before = metric(&c, 0, "gossip_refused");
    let mut raw = Raw::connect(&c, 0, "n2");
    let forged = vec![
        entry("n3", n3_before + 1, 1, now_ms()),
        entry("n1", now_ms(), 1, now_ms()),
    ];
    for id in 1..=5 {
        match raw.call(
            id,
            Request::Gossip {
                members: forged.clone(),
            },
        ) {
            Response::Gossip { members } => assert_eq!(members.len(), 1),
            other => panic!("{other:?}"),
        }
    }
    assert!(metric(&c, 0, "gossip_refused") >= refused_before + 10);
    std::thread::sleep(Duration::from_secs(1));
    let n3 = crate::faults::status_of(&c, 0, "n3");
    assert_eq!(n3["generation"], n3_before, "{n3}");
    assert_eq!(n3["status"], "up", "{n3}");
}

/// Every route and role combination the README lists.
#[test]
fn roles_and_prefixes_get_200_401_403() {
    let mut spec = ClusterSpec::single().secure();
    // This test fails on purpose more often than the default allows.
    spec.security.auth_failures_per_minute = 1000;
    let c = Cluster::start(spec);
    let read = c.add_token("read", None);
    let write = c.add_token("write", None);
    let scoped = c.add_token("write", Some("users/"));
    let admin = c.admin_token.clone().unwrap();
    let expired = expired_token(&c);
    // Tokens added after start are picked up without a restart.
    let client = |t: Option<&str>| c.client_with_token(0, t);
    wait_until(
        Duration::from_secs(5),
        "new tokens are in force",
        || match client(Some(&read)).get("/ready").status {
            200 => Poll::Ready(()),
            s => Poll::Pending(s.to_string()),
        },
    );
    let seeded = client(Some(&admin)).put(&kv_at("users/1", None), b"one");
    assert_eq!(seeded.status, 201, "{seeded}");
    client(Some(&admin))
        .put(&kv_at("other", None), b"two")
        .expect_status(201);

    let none = client(None);
    let bad_secret = {
        let (id, _) = read.split_once('.').unwrap();
        format!("{id}.{}", "0".repeat(64))
    };
    // 401: one answer for every kind of bad token, with WWW-Authenticate.
    let first = none.get(&kv_at("other", None));
    first.expect_error(401, "unauthorized");
    assert!(first.header("www-authenticate").is_some(), "{first}");
    for (what, t) in [
        ("malformed", "not-a-token"),
        ("wrong secret", bad_secret.as_str()),
        ("expired", expired.as_str()),
    ] {
        let r = client(Some(t)).get(&kv_at("other", None));
        assert_eq!((r.status, &r.body), (401, &first.body), "{what}: {r}");
    }
    for path in ["/ready", "/metrics", "/v1/cluster", "/v1/ring"] {
        none.get(path).expect_error(401, "unauthorized");
        client(Some(&read)).get(path).expect_status(200);
    }
    none.get("/health").expect_status(200);

    let status = |t: &str, method: &str, path: &str| -> u16 {
        client(Some(t))
            .call(method, path, &[], (method == "PUT").then_some(&b"v"[..]))
            .status
    };
    let k = kv_at("users/2", None);
    let other = kv_at("other", None);
    let missing = kv_at("nothing-here", None);
    let (users1, users3) = (kv_at("users/1", None), kv_at("users/3", None));
    // (token, method, path, expected)
    let cases: Vec<(&str, &str, &str, &str, u16)> = vec![
        ("read", &read, "GET", &other, 200),
        ("read", &read, "GET", &missing, 404),
        ("read", &read, "HEAD", &other, 200),
        ("read", &read, "PUT", &k, 403),
        ("read", &read, "DELETE", &other, 403),
        ("read", &read, "GET", "/v1/admin/merkle", 403),
        ("read", &read, "POST", "/v1/admin/repair?wait_ms=0", 403),
        ("read", &read, "GET", "/v1/admin/local/other", 403),
        ("write", &write, "PUT", &k, 201),
        ("write", &write, "GET", &k, 200),
        ("write", &write, "GET", "/v1/admin/merkle", 403),
        ("scoped", &scoped, "PUT", &users3, 201),
        ("scoped", &scoped, "GET", &users1, 200),
        ("scoped", &scoped, "PUT", &other, 403),
        ("scoped", &scoped, "GET", &other, 403),
        ("scoped", &scoped, "GET", &missing, 403),
        ("scoped", &scoped, "DELETE", &other, 403),
        ("scoped", &scoped, "GET", "/v1/cluster", 200),
        ("admin", &admin, "GET", "/v1/admin/merkle", 200),
        ("admin", &admin, "GET", "/v1/admin/local/other", 200),
        ("admin", &admin, "DELETE", &k, 204),
    ];
    for (who, token, method, path, want) in &cases {
        assert_eq!(status(token, method, path), *want, "{who} {method} {path}");
    }
    // A 403 does not tell whether the key exists: same body for both.
    let a = client(Some(&scoped)).get(&other);
    let b = client(Some(&scoped)).get(&missing);
    a.expect_error(403, "forbidden");
    assert_eq!(a.body, b.body);
    // An encoded path is judged as it is routed.
    assert_eq!(status(&read, "GET", "/v1/%61dmin/merkle"), 403);
    assert_eq!(status(&read, "PUT", "/v1/%6bv/x"), 403);
    // A scoped token is judged on the key the handler decodes: an encoded
    // key under its prefix is in, one that only looks like it is out.
    assert_eq!(status(&scoped, "GET", "/v1/kv/%75sers%2F1"), 200);
    assert_eq!(status(&scoped, "GET", "/v1/kv/users%2F1"), 200);
    assert_eq!(status(&scoped, "GET", "/v1/kv/%6Fther"), 403);
    assert_eq!(status(&scoped, "GET", "/v1/kv/users"), 403);
    // An admin token scoped to a prefix reaches local reads under it only,
    // and no cluster-wide admin route.
    let scoped_admin = c.add_token("admin", Some("users/"));
    wait_until(
        Duration::from_secs(5),
        "the scoped admin token is in force",
        || match client(Some(&scoped_admin)).get("/ready").status {
            200 => Poll::Ready(()),
            s => Poll::Pending(s.to_string()),
        },
    );
    assert_eq!(status(&scoped_admin, "GET", "/v1/admin/local/users/1"), 200);
    assert_eq!(status(&scoped_admin, "GET", "/v1/admin/local/other"), 403);
    assert_eq!(status(&scoped_admin, "GET", "/v1/admin/merkle"), 403);

    // Revocation through the CLI takes effect without a restart.
    let id = write.split_once('.').unwrap().0;
    let out = run_bin(
        &[
            "token",
            "revoke",
            "--config",
            c.config_path.to_str().unwrap(),
            id,
        ],
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{out:?}");
    wait_until(
        Duration::from_secs(5),
        "the revoked token is refused",
        || match client(Some(&write)).get(&other).status {
            401 => Poll::Ready(()),
            s => Poll::Pending(s.to_string()),
        },
    );
    let listed = run_bin(
        &["token", "list", "--config", c.config_path.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert!(listed.status.success(), "{listed:?}");
    assert!(!listed.stdout.contains(id), "{}", listed.stdout);
    assert!(
        listed.stdout.contains("prefix \"users/\""),
        "{}",
        listed.stdout
    );

    assert!(metric(&c, 0, "auth_failures") >= 10);
    assert!(metric(&c, 0, "auth_forbidden") >= 12);
    // Secrets never reach the log; the ids of refused tokens do.
    let log = c.node(0).log();
    for t in [&read, &write, &scoped, &admin, &expired, &bad_secret] {
        let secret = t.split_once('.').unwrap().1;
        assert!(!log.contains(secret), "a secret is in the log");
    }
    assert!(log.contains(id), "the refused token's id is not logged");
    assert!(
        !log.contains("users/2") && !log.contains("users/3"),
        "keys in the log"
    );
}

/// A token that expired a minute ago, written straight into the file.
fn expired_token(c: &Cluster) -> String {
    let t = ringkv::token_cli::new_token(
        ringkv::auth::token::Role::Admin,
        None,
        None,
        "expired".into(),
    )
    .unwrap();
    let mut record = t.record.clone();
    record.expires_unix = Some(now_ms() / 1000 - 60);
    ringkv::auth::store::TokensFile::update(&c.dir.path().join("tokens.toml"), |f| {
        f.tokens.push(record);
        Ok(())
    })
    .unwrap();
    t.token
}

#[test]
fn brute_force_is_throttled_per_address() {
    let c = Cluster::start(ClusterSpec::single().secure());
    let admin = c.admin_token.clone().unwrap();
    let (id, _) = admin.split_once('.').unwrap();
    let client = |t: &str| c.client_with_token(0, Some(t));
    // Requests without a token guess nothing and are never throttled (a
    // load balancer probing /ready blocks nobody).
    for _ in 0..25 {
        c.client_with_token(0, None)
            .get("/ready")
            .expect_error(401, "unauthorized");
    }
    let mut throttled = None;
    for i in 0..30 {
        let guess = format!("{id}.{:064x}", i);
        let r = client(&guess).get(&kv_at("k", None));
        if r.status == 429 {
            throttled = Some((i, r));
            break;
        }
        r.expect_error(401, "unauthorized");
    }
    let (after, r) = throttled.expect("never throttled");
    assert!(after >= 5, "throttled after {after} failures");
    r.expect_error(429, "throttled");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=300).contains(&wait), "{r}");
    // While the address is blocked, guesses are answered 429, but a valid
    // token is still served: clients behind the same
    // NAT or proxy as the guesser keep working...
    client(&admin).get("/v1/cluster").expect_status(200);
    let again = client(&format!("{id}.{:064x}", 999)).get(&kv_at("k", None));
    again.expect_error(429, "throttled");
    // ... and once the block ends a guess is answered 401 again.
    std::thread::sleep(Duration::from_secs(wait) + Duration::from_millis(200));
    client(&format!("{id}.{:064x}", 998))
        .get(&kv_at("k", None))
        .expect_error(401, "unauthorized");
    assert!(metric(&c, 0, "auth_throttled") >= 2);
    let log = c.node(0).log();
    assert!(!log.contains(admin.split_once('.').unwrap().1));
}

/// `ringkv certs renew` for every node of `c`.
fn renew_certs(c: &Cluster) {
    let renew = run_bin(
        &[
            "certs",
            "renew",
            "--config",
            c.config_path.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(renew.status.success(), "{renew:?}");
}

/// The certificate a fresh HTTPS connection to `addr` is served.
fn served_cert(addr: std::net::SocketAddr, ca: &Path) -> Vec<u8> {
    let config = ringkv::client::tls_config(ca).unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).expect("TLS handshake");
    }
    conn.peer_certificates().unwrap()[0].to_vec()
}

fn cert_file_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path)
        .unwrap()
        .to_vec()
}

/// Renew every node's certificate (CLI), SIGHUP one node, restart another,
/// while clients keep writing through the others: no request fails, every
/// node serves its new certificate, peers reconnect with the new ones.
#[test]
fn certificate_rotation_under_load_loses_no_request() {
    let mut c = Cluster::start(ClusterSpec::fast(3, 3).secure());
    c.wait_replicas_reachable();
    let ca = c.dir.path().join("certs/ca.crt");
    let old: Vec<Vec<u8>> = c
        .nodes
        .iter()
        .map(|n| served_cert(n.http_addr, &ca))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let clients: Vec<Client> = (0..2).map(|i| c.node(i).client()).collect();
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (stop, acked, clients) = (stop.clone(), acked.clone(), clients.clone());
            std::thread::spawn(move || -> Vec<String> {
                let mut failures = Vec::new();
                let started = Instant::now();
                for i in 0..100_000u64 {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(90) {
                        break;
                    }
                    let key = format!("rot-{w}-{i}");
                    let client = &clients[(i % 2) as usize];
                    match client.send(
                        "PUT",
                        &kv_at(&key, Some("quorum")),
                        &[],
                        Some(key.as_bytes()),
                    ) {
                        Ok(r) if r.status == 201 => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => failures.push(format!("{key}: {r}")),
                        Err(e) => failures.push(format!("{key}: {e}")),
                    }
                }
                failures
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(1));
    renew_certs(&c);
    for (i, node) in c.nodes.iter().enumerate() {
        let file = cert_file_der(&c.dir.path().join(format!("certs/{}.crt", node.id)));
        assert_ne!(file, old[i]);
        wait_until(
            Duration::from_secs(10),
            &format!("{} serves its new certificate", node.id),
            || {
                if served_cert(node.http_addr, &ca) == file {
                    Poll::Ready(())
                } else {
                    Poll::Pending(String::new())
                }
            },
        );
    }
    let pid = c.node_mut(1).pid().unwrap();
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) }, 0);
    log_has(&c, 1, "SIGHUP: reloaded the node certificate and CA");
    // Node 3 restarts with its new certificate; load goes through 1 and 2.
    c.node_mut(2).sigterm();
    c.node_mut(2).start();
    c.wait_replicas_reachable();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let acked = acked.load(Ordering::Relaxed);
    eprintln!(
        "[security] rotation: {acked} writes acknowledged, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "requests failed during rotation: {failures:?}"
    );
    assert!(acked > 50, "only {acked} writes went through");
    for i in 0..3 {
        assert!(
            metric(&c, i, "tls_reloads") >= 1 || i == 2,
            "node {i} never reloaded"
        );
    }
    // A new peer handshake with any node meets its renewed certificate
    // (node 1 reloaded on the file change, node 2 on SIGHUP, node 3 at its
    // restart); sessions opened before keep theirs while it stays valid.
    for (i, node) in c.nodes.iter().enumerate() {
        let file = cert_file_der(&c.dir.path().join(format!("certs/{}.crt", node.id)));
        let as_node = if i == 0 { "n2" } else { "n1" };
        let presented = PeerConn::connect(&c, i, as_node).peer_cert().unwrap();
        assert_eq!(
            presented, file,
            "{} presents its renewed certificate",
            node.id
        );
    }
    // And the restarted node, dialing with its new certificate, is accepted
    // by the others: a write at `all` through node 3 reaches all.
    let r = c
        .node(2)
        .client()
        .put(&kv_at("after-rotation", Some("all")), b"x");
    assert_eq!(r.status, 201, "{r}");
}

#[test]
fn a_bad_certificate_on_reload_keeps_the_one_in_force() {
    let c = Cluster::start(ClusterSpec::single().secure());
    let node = c.node(0);
    let ca = c.dir.path().join("certs/ca.crt");
    let before = served_cert(node.http_addr, &ca);
    let cert = c.dir.path().join("certs/n1.crt");
    std::fs::write(&cert, "garbage").unwrap();
    wait_until(
        Duration::from_secs(5),
        "the reload is refused",
        || match metric(&c, 0, "tls_reload_failures") {
            0 => Poll::Pending(String::new()),
            _ => Poll::Ready(()),
        },
    );
    assert_eq!(served_cert(node.http_addr, &ca), before);
    node.client()
        .put(&kv_at("still", None), b"serving")
        .expect_status(201);
    log_has(
        &c,
        0,
        "cannot reload the node certificate and CA, keeping the one in force",
    );
    renew_certs(&c);
    let file = cert_file_der(&cert);
    wait_until(
        Duration::from_secs(5),
        "the renewed certificate is served",
        || {
            if served_cert(node.http_addr, &ca) == file {
                Poll::Ready(())
            } else {
                Poll::Pending(String::new())
            }
        },
    );
    // A broken CA bundle is refused as well; peers and clients go on.
    // (The test's own clients read the CA file, so progress is watched in
    // the log while it is broken.)
    let failures = metric(&c, 0, "tls_reload_failures");
    let refused = "cannot reload the node certificate and CA";
    let logged = node.log().matches(refused).count();
    let ca_pem = std::fs::read(&ca).unwrap();
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    wait_until(
        Duration::from_secs(5),
        "the CA reload is refused",
        || match node.log().matches(refused).count() {
            n if n > logged => Poll::Ready(()),
            _ => Poll::Pending(String::new()),
        },
    );
    std::fs::write(&ca, &ca_pem).unwrap();
    assert!(metric(&c, 0, "tls_reload_failures") > failures);
    node.client()
        .put(&kv_at("still", None), b"serving")
        .expect_status(204);
    // A tokens file that changed and does not parse may revoke any token:
    // every token is refused until it loads, which is counted.
    let tokens = c.dir.path().join("tokens.toml");
    let tokens_text = std::fs::read(&tokens).unwrap();
    std::fs::write(&tokens, "this is [not toml").unwrap();
    wait_until(
        Duration::from_secs(5),
        "the tokens reload is refused",
        || match node.client().get(&kv_at("still", None)).status {
            503 => Poll::Ready(()),
            s => Poll::Pending(s.to_string()),
        },
    );
    log_has(&c, 0, "cannot reload the tokens file");
    std::fs::write(&tokens, &tokens_text).unwrap();
    wait_until(
        Duration::from_secs(5),
        "the tokens file loads again",
        || match node.client().get(&kv_at("still", None)).status {
            200 => Poll::Ready(()),
            s => Poll::Pending(s.to_string()),
        },
    );
    assert!(metric(&c, 0, "tokens_reload_failures") > 0);
}

/// `ringkv_reload_failing{file="<file>"}` of node `i` (read with the
/// harness's admin token).
fn reload_failing(c: &Cluster, i: usize, file: &str) -> u64 {
    let r = c.node(i).client().get("/metrics");
    let text = r.text();
    let prefix = format!("ringkv_reload_failing{{file=\"{file}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in {r}"))
}

fn wait_reload_failing(c: &Cluster, i: usize, file: &str, want: u64) {
    wait_until(
        Duration::from_secs(6),
        &format!("reload_failing{{file={file}}} of node {i} is {want}"),
        || match reload_failing(c, i, file) {
            n if n == want => Poll::Ready(()),
            n => Poll::Pending(n.to_string()),
        },
    );
}

/// Overwrites `path` in place with `bytes` (same inode) and gives it back
/// the modification time `mtime`: a change its watcher cannot see.
fn rewrite_unseen(path: &Path, bytes: &[u8], mtime: SystemTime) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
    f.set_modified(mtime).unwrap();
}

/// A tokens file that cannot be read (a directory stands in its place: root
/// cannot read that either) while a token is revoked in it: every token
/// gets 503 `tokens_unavailable` meanwhile, not 200; once a valid file with
/// the revocation is back, the revoked token gets 401 within a couple of
/// seconds, without SIGHUP. Then a reload that fails while the file looks
/// unchanged (SIGHUP at a bad moment) keeps the tokens in force, shows in
/// `ringkv_reload_failing` and `/v1/cluster`, and is retried until it loads
/// (the gauge goes 1 → 0). While every token is refused, `/metrics` is
/// refused too; the open `/health` names the failing file.
#[test]
fn a_tokens_file_that_cannot_load_refuses_every_token_until_it_does() {
    let mut c = Cluster::start(ClusterSpec::single().secure());
    let pid = c.node_mut(0).pid().expect("running");
    let c = c;
    let tokens = c.dir.path().join("tokens.toml");
    let admin = c.admin_token.clone().unwrap();
    let doomed = c.add_token("write", None);
    let doomed_id = doomed.split_once('.').unwrap().0.to_string();
    let client = |t: &str| c.client_with_token(0, Some(t));
    let key = kv_at("k", None);
    wait_until(
        Duration::from_secs(5),
        "the new token is in force",
        || match client(&doomed).get(&key).status {
            404 => Poll::Ready(()),
            s => Poll::Pending(s.to_string()),
        },
    );
    assert_eq!(reload_failing(&c, 0, "tokens"), 0);

    // 1. Unreadable, and the token revoked in the file that will replace it.
    let good = std::fs::read(&tokens).unwrap();
    std::fs::remove_file(&tokens).unwrap();
    std::fs::create_dir(&tokens).unwrap();
    let refused = wait_until(
        Duration::from_secs(5),
        "every token is refused",
        || match client(&admin).get("/v1/cluster") {
            r if r.status == 503 => Poll::Ready(r),
            r => Poll::Pending(r.to_string()),
        },
    );
    let body = refused.expect_error(503, "tokens_unavailable");
    assert_eq!(body["outcome"], "not_applied", "{refused}");
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused}");
    log_has(&c, 0, "cannot reload the tokens file, refusing every token");
    let next = c.dir.path().join("tokens.next");
    std::fs::write(&next, &good).unwrap();
    ringkv::auth::store::TokensFile::update(&next, |f| {
        f.tokens.retain(|t| t.id != doomed_id);
        Ok(())
    })
    .unwrap();
    // Broken for a while: retried every second, refused throughout.
    let broken = Instant::now();
    while broken.elapsed() < Duration::from_secs(3) {
        for t in [&admin, &doomed] {
            client(t).get(&key).expect_error(503, "tokens_unavailable");
        }
        // The open route says what fails (the detailed ones need a token).
        let health = c.client_with_token(0, None).get("/health");
        health.expect_status(200);
        assert_eq!(
            health.json()["reload_failing"],
            serde_json::json!(["tokens"]),
            "{health}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::remove_dir(&tokens).unwrap();
    std::fs::rename(&next, &tokens).unwrap();
    let restored = Instant::now();
    wait_until(
        Duration::from_secs(5),
        "the revoked token is refused",
        || match client(&doomed).get(&key).status {
            401 => Poll::Ready(()),
            s => Poll::Pending(s.to_string()),
        },
    );
    assert!(
        restored.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        restored.elapsed()
    );
    client(&admin).get(&key).expect_status(404);
    assert_eq!(reload_failing(&c, 0, "tokens"), 0);
    log_has(&c, 0, "reloaded the tokens file (1 in force) after");

    // 2. SIGHUP while the file cannot be parsed but looks as in force.
    let in_force = std::fs::read(&tokens).unwrap();
    let mtime = std::fs::metadata(&tokens).unwrap().modified().unwrap();
    rewrite_unseen(&tokens, &vec![b'['; in_force.len()], mtime);
    // SAFETY: kill(2) with the pid of a child this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    wait_reload_failing(&c, 0, "tokens", 1);
    let failures = metric(&c, 0, "tokens_reload_failures");
    let status = c.cluster_status(0);
    let failing = status["reload_failing"].as_array().expect("reload_failing");
    assert_eq!(failing.len(), 1, "{status}");
    assert_eq!(failing[0]["file"], "tokens");
    assert!(failing[0]["since_unix_ms"].as_u64().unwrap() > 0);
    assert!(
        failing[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("tokens.toml"),
        "{status}"
    );
    // The file did not change (as far as the node can tell): the tokens in
    // force serve, and the reload is retried every second.
    client(&admin).get(&key).expect_status(404);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(metric(&c, 0, "tokens_reload_failures") >= failures + 2);
    rewrite_unseen(&tokens, &in_force, mtime);
    wait_reload_failing(&c, 0, "tokens", 0);
    let status = c.cluster_status(0);
    assert_eq!(status["reload_failing"], serde_json::json!([]), "{status}");
    client(&doomed).get(&key).expect_error(401, "unauthorized");
}

/// Writes `bytes` beside `path` and renames it over `path`.
fn replace_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Whether node `i` answers the hello of a peer presenting `cert` as n2.
fn answers_hello_as_n2(
    c: &Cluster,
    i: usize,
    roots_pem: &[u8],
    cert: &ringkv_actors::certgen::Issued,
) -> bool {
    let node = c.node(i);
    let config = foreign_client(roots_pem, &cert.cert_pem, &cert.key_pem);
    let mut conn = PeerConn::tls(node.peer_addr, &node.id, config);
    conn.set_read_timeout(Some(Duration::from_secs(3)));
    let hello = Frame::Hello(Hello {
        cluster: "itest".into(),
        protocol: PROTOCOL_VERSION,
        node_id: "n2".into(),
        layout: 0,
    });
    if conn
        .write_all(&encode_frame(&hello, 4096).unwrap())
        .and_then(|_| conn.flush())
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 256];
    matches!(conn.read(&mut buf), Ok(n) if n > 0)
}

/// A CA rotation removing the old CA, whose new bundle is caught
/// half-written (the new CA, then a cut-off block) and stays so a while:
/// the old CA is not trusted from the first failed reload on — a peer with
/// an old-CA certificate is refused — while the members, on the new CA,
/// keep talking; the finished bundle loads and the gauge goes back to 0.
#[test]
fn a_ca_bundle_caught_half_written_never_keeps_the_removed_ca_trusted() {
    let mut c = Cluster::start(ClusterSpec::fast(2, 2));
    c.wait_replicas_reachable();
    let certs = c.dir.path().join("certs");
    let old_pem = std::fs::read_to_string(certs.join("ca.crt")).unwrap();
    let old = Ca::load(
        &old_pem,
        &std::fs::read_to_string(certs.join("ca.key")).unwrap(),
    )
    .unwrap();
    let (new, new_issued) = Ca::generate("itest", Validity::days(30)).unwrap();
    let names = NodeNames {
        ips: vec!["127.0.0.1".parse().unwrap()],
        dns: vec![],
    };
    // Rotation step 1: both CAs trusted; step 2: members on the new CA.
    let both = format!("{old_pem}{}", new_issued.cert_pem);
    replace_atomically(&certs.join("ca.crt"), both.as_bytes());
    for i in 0..2 {
        wait_until(
            Duration::from_secs(6),
            "the bundle is reloaded",
            || match metric(&c, i, "tls_reloads") {
                0 => Poll::Pending(String::new()),
                _ => Poll::Ready(()),
            },
        );
    }
    for id in ["n1", "n2"] {
        let pair = new.issue_node(id, &names, Validity::days(30)).unwrap();
        replace_atomically(&certs.join(format!("{id}.key")), pair.key_pem.as_bytes());
        replace_atomically(&certs.join(format!("{id}.crt")), pair.cert_pem.as_bytes());
    }
    for i in 0..2 {
        wait_until(
            Duration::from_secs(6),
            "the new certificates load",
            || match (metric(&c, i, "tls_reloads"), reload_failing(&c, i, "tls")) {
                (n, 0) if n >= 2 => Poll::Ready(()),
                other => Poll::Pending(format!("{other:?}")),
            },
        );
    }
    let old_peer = old.issue_node("n2", &names, Validity::days(1)).unwrap();
    let new_peer = new.issue_node("n2", &names, Validity::days(1)).unwrap();
    let roots = both.as_bytes();
    assert!(
        answers_hello_as_n2(&c, 0, roots, &old_peer),
        "before: old CA"
    );
    assert!(
        answers_hello_as_n2(&c, 0, roots, &new_peer),
        "before: new CA"
    );

    // Step 3, remove the old CA: the file is caught half-written.
    std::fs::write(
        certs.join("ca.crt"),
        format!(
            "{}-----BEGIN CERTIFICATE-----\nMIIBkTCB+w",
            new_issued.cert_pem
        ),
    )
    .unwrap();
    wait_reload_failing(&c, 0, "tls", 1);
    let broken = Instant::now();
    while broken.elapsed() < Duration::from_secs(3) {
        assert!(
            !answers_hello_as_n2(&c, 0, roots, &old_peer),
            "the removed CA is trusted while the bundle is broken"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        answers_hello_as_n2(&c, 0, roots, &new_peer),
        "broken: new CA"
    );
    let status = c.cluster_status(0);
    let failing = &status["reload_failing"][0];
    assert_eq!(failing["file"], "tls", "{status}");
    assert!(
        failing["last_error"].as_str().unwrap().contains("ca.crt"),
        "{status}"
    );
    log_has(
        &c,
        0,
        "trusting only the CAs in force that the new CA file still holds (1 of 2)",
    );
    // The members, both on the new CA, still talk.
    wait_until(Duration::from_secs(10), "a write to both replicas", || {
        let r = c
            .node(0)
            .client()
            .put(&kv_at("mid-rotation", Some("all")), b"x");
        match r.status {
            201 | 204 => Poll::Ready(()),
            _ => Poll::Pending(r.to_string()),
        }
    });
    // The finished bundle loads; the old CA stays out.
    replace_atomically(&certs.join("ca.crt"), new_issued.cert_pem.as_bytes());
    wait_reload_failing(&c, 0, "tls", 0);
    wait_reload_failing(&c, 1, "tls", 0);
    assert!(
        !answers_hello_as_n2(&c, 0, roots, &old_peer),
        "after: old CA"
    );
    assert!(
        answers_hello_as_n2(&c, 0, roots, &new_peer),
        "after: new CA"
    );
}

/// webpki trusts an expired CA certificate (it checks only what the CA
/// issued): ringkv refuses to start with one, naming the file and the CA.
#[test]
fn an_expired_ca_refuses_start_naming_it() {
    let c = Cluster::create(ClusterSpec::single());
    let certs = c.dir.path().join("certs");
    let (ca, issued) = Ca::generate("itest", Validity::expired()).unwrap();
    std::fs::write(certs.join("ca.crt"), &issued.cert_pem).unwrap();
    let names = NodeNames {
        ips: vec!["127.0.0.1".parse().unwrap()],
        dns: vec![],
    };
    let pair = ca.issue_node("n1", &names, Validity::days(30)).unwrap();
    std::fs::write(certs.join("n1.crt"), &pair.cert_pem).unwrap();
    std::fs::write(certs.join("n1.key"), &pair.key_pem).unwrap();
    let out = run_bin(
        &[
            "serve",
            "--config",
            c.config_path.to_str().unwrap(),
            "--node",
            "n1",
        ],
        Duration::from_secs(20),
    );
    assert!(!out.status.success(), "started with an expired CA");
    for needle in ["ca.crt", "has expired", "ringkv CA itest"] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
}

#[test]
fn a_missing_expired_or_mismatched_certificate_refuses_start() {
    let c = Cluster::create(ClusterSpec::fast(2, 2));
    let certs = c.dir.path().join("certs");
    let config = c.config_path.to_str().unwrap().to_string();
    let start = || {
        run_bin(
            &["serve", "--config", &config, "--node", "n1"],
            Duration::from_secs(20),
        )
    };
    let expect = |what: &str, file: &str, reason: &str| {
        let out = start();
        assert!(!out.status.success(), "{what}: started anyway");
        assert!(
            out.stderr.contains(file) && out.stderr.contains(reason),
            "{what}: {}",
            out.stderr
        );
    };
    let keep = std::fs::read(certs.join("n1.crt")).unwrap();
    std::fs::remove_file(certs.join("n1.crt")).unwrap();
    expect("missing", "n1.crt", "cannot read");
    // n2's certificate in n1's place.
    std::fs::copy(certs.join("n2.crt"), certs.join("n1.crt")).unwrap();
    expect("another node's", "n1.crt", "does not name node n1");
    std::fs::write(certs.join("n1.crt"), &keep).unwrap();
    std::fs::copy(certs.join("n2.key"), certs.join("n1.key")).unwrap();
    expect("mismatched key", "n1.key", "does not match");
    let ca = Ca::load(
        &std::fs::read_to_string(certs.join("ca.crt")).unwrap(),
        &std::fs::read_to_string(certs.join("ca.key")).unwrap(),
    )
    .unwrap();
    let names = NodeNames {
        ips: vec!["127.0.0.1".parse().unwrap()],
        dns: vec![],
    };
    let old = ca.issue_node("n1", &names, Validity::expired()).unwrap();
    std::fs::write(certs.join("n1.crt"), old.cert_pem).unwrap();
    std::fs::write(certs.join("n1.key"), old.key_pem).unwrap();
    expect("expired", "n1.crt", "expired");
}

/// `ringkv up` on a config with `[security]` and nothing made yet: it makes
/// the CA and certificates (keys 0600) and a tokens file, prints the admin
/// token, and the cluster serves HTTPS to that token (CLI included).
#[test]
fn up_makes_certificates_and_prints_an_admin_token() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::create(ClusterSpec::fast(3, 3).secure());
    std::fs::remove_dir_all(c.dir.path().join("certs")).unwrap();
    std::fs::remove_file(c.dir.path().join("tokens.toml")).unwrap();
    let up = crate::cluster::Up::start(&c.config_path);
    let token = wait_until(Duration::from_secs(20), "up prints a token", || {
        match up.output().lines().find_map(|l| {
            l.trim()
                .strip_prefix("export RINGKV_TOKEN=")
                .map(String::from)
        }) {
            Some(t) => Poll::Ready(t),
            None => Poll::Pending(up.output()),
        }
    });
    let mode = std::fs::metadata(c.dir.path().join("certs/n2.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let node = c.node(0);
    let https = Client::for_access(
        node.base_url(),
        HTTP_TIMEOUT,
        &crate::harness::Access {
            ca: Some(c.dir.path().join("certs/ca.crt")),
            token: Some(token.clone()),
        },
    );
    assert!(node.base_url().starts_with("https://"));
    wait_until(
        Duration::from_secs(20),
        "a write at all succeeds",
        || match https.send("PUT", &kv_at("up-secure", Some("all")), &[], Some(b"v")) {
            Ok(r) if r.status == 201 => Poll::Ready(()),
            Ok(r) => Poll::Pending(r.to_string()),
            Err(e) => Poll::Pending(e.to_string()),
        },
    );
    let ca = c.dir.path().join("certs/ca.crt");
    let get = run_bin(
        &[
            "get",
            "up-secure",
            "--node",
            &c.node(2).http_addr.to_string(),
            "--ca-file",
            ca.to_str().unwrap(),
            "--token",
            &token,
        ],
        Duration::from_secs(10),
    );
    assert!(get.status.success(), "{get:?}");
    assert_eq!(get.stdout, "v");
    let denied = run_bin(
        &[
            "get",
            "up-secure",
            "--node",
            &c.node(2).http_addr.to_string(),
            "--ca-file",
            ca.to_str().unwrap(),
        ],
        Duration::from_secs(10),
    );
    assert!(
        !denied.status.success() && denied.stderr.contains("401"),
        "{denied:?}"
    );
    // Nothing of the token's secret in any node's log.
    let secret = token.split_once('.').unwrap().1;
    assert!(!up
        .output()
        .lines()
        .filter(|l| l.starts_with('['))
        .any(|l| l.contains(secret)));
}

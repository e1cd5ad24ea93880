//! Raw TCP against a node's peer port (clusters without peer TLS, so the
//! bytes on the wire are the protocol's own): malformed input closes that
//! one connection (logged with the reason) and the node keeps serving; a
//! correct hello is answered with a hello and requests work. `security.rs`
//! runs the same kind of attacks through TLS.

use crate::harness::{kv_at, wait_until, Cluster, ClusterSpec, Node, Poll};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// The peer protocol version the node speaks (`actors/src/wire.rs`).
const PROTOCOL: u8 = 3;

/// How long the server may take to close a connection it refuses.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// A MessagePack fixstr.
fn fixstr(s: &str) -> Vec<u8> {
    assert!(s.len() < 32, "fixstr only");
    let mut out = vec![0xa0 | s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

/// A frame: 4-byte big-endian length, then the body.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// `{"Hello": {"cluster": c, "protocol": p, "node_id": id}}` (named fields,
/// as in the golden frames of actors/src/wire.rs).
fn hello_body(cluster: &str, protocol: u8, node_id: &str) -> Vec<u8> {
    assert!(protocol < 128, "positive fixint only");
    let mut b = vec![0x81];
    b.extend(fixstr("Hello"));
    b.push(0x83);
    b.extend(fixstr("cluster"));
    b.extend(fixstr(cluster));
    b.extend(fixstr("protocol"));
    b.push(protocol);
    b.extend(fixstr("node_id"));
    b.extend(fixstr(node_id));
    b
}

/// [`hello_body`] stating the layout fingerprint `layout` (uint 64).
fn hello_with_layout(cluster: &str, node_id: &str, layout: u64) -> Vec<u8> {
    let mut b = hello_body(cluster, PROTOCOL, node_id);
    b[1 + 6] = 0x84;
    b.extend(fixstr("layout"));
    b.push(0xcf);
    b.extend(layout.to_be_bytes());
    b
}

/// `{"Request": {"id": id, "body": {"Read": {"key": bin8 key}}}}`.
fn read_request_body(id: u8, key: &[u8]) -> Vec<u8> {
    assert!(id < 128 && key.len() < 256);
    let mut b = vec![0x81];
    b.extend(fixstr("Request"));
    b.extend([0x82]);
    b.extend(fixstr("id"));
    b.push(id);
    b.extend(fixstr("body"));
    b.push(0x81);
    b.extend(fixstr("Read"));
    b.push(0x81);
    b.extend(fixstr("key"));
    b.extend([0xc4, key.len() as u8]);
    b.extend_from_slice(key);
    b
}

fn connect(node: &Node) -> TcpStream {
    let s = TcpStream::connect(node.peer_addr)
        .unwrap_or_else(|e| panic!("connect to {} peer port: {e}", node.id));
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("read timeout");
    s
}

/// Reads until the server closes the connection (EOF or reset); panics if it
/// is still open after [`CLOSE_WITHIN`]. Answers what the server sent.
fn expect_closed(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let deadline = Instant::now() + CLOSE_WITHIN;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                return got
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{what}: read failed: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the server kept the connection open for {CLOSE_WITHIN:?} (got {got:?})"
        );
    }
}

/// Waits until the node logged refusing the connection from `from`; answers
/// the log line.
fn closing_line(node: &Node, from: std::net::SocketAddr) -> String {
    let needle = format!("refused a peer connection from {from}");
    wait_until(
        Duration::from_secs(5),
        &format!("{} logs {needle:?}", node.id),
        || match node.log().lines().find(|l| l.contains(&needle)) {
            Some(l) => Poll::Ready(l.to_string()),
            None => Poll::Pending(
                node.log()
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        },
    )
}

/// Writes at `all` (through the peer sessions between the two nodes) and reads
/// back through the other node.
fn assert_cluster_serves(c: &Cluster, key: &str) {
    let r = c
        .node(0)
        .client()
        .put(&kv_at(key, Some("all")), key.as_bytes());
    assert!(r.status == 201 || r.status == 204, "write after {key}: {r}");
    let r = c.node(1).client().get(&kv_at(key, Some("all")));
    assert_eq!((r.status, r.text()), (200, key.to_string()), "{r}");
}

#[test]
fn malformed_peer_input_closes_only_that_connection() {
    let mut c = Cluster::start(ClusterSpec::new(2, 2).plain());
    c.wait_replicas_reachable();
    let node = c.node(0);

    // Each case: bytes to send, whether to half-close afterwards, and what the
    // logged reason must mention.
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[0x81; 10]);
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "http-garbage",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            &["exceeds"],
        ),
        ("truncated-frame", truncated, &[]),
        (
            "wrong-cluster-hello",
            frame(&hello_body("other", PROTOCOL, "n2")),
            &["cluster 'other'"],
        ),
        (
            "wrong-protocol-hello",
            frame(&hello_body("itest", 1, "n2")),
            &["protocol 1"],
        ),
        (
            // A member configured with another `cluster.partitions`, N or
            // node list places keys elsewhere: refused (issue 16 review).
            "other-layout-hello",
            frame(&hello_with_layout("itest", "n2", 0x1234_5678)),
            &["places keys by layout 0x12345678", "cluster.partitions"],
        ),
        (
            "stranger-hello",
            frame(&hello_body("itest", PROTOCOL, "x")),
            &["'x' is not a member"],
        ),
        (
            "impostor-hello",
            frame(&hello_body("itest", PROTOCOL, "n1")),
            &["claims to be this node"],
        ),
        (
            "request-before-hello",
            frame(&read_request_body(1, b"k")),
            &["expected a hello"],
        ),
        (
            "oversized-length",
            vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
            &["exceeds"],
        ),
    ];
    for (name, bytes, reasons) in cases {
        let mut s = connect(node);
        let from = s.local_addr().expect("local addr");
        s.write_all(&bytes).expect("send");
        // Half-close: the truncated frame ends here; the others would be
        // refused without it. (A node that already refused the connection
        // reset it — peer sockets close abortively — and there is nothing
        // left to half-close.)
        if let Err(e) = s.shutdown(Shutdown::Write) {
            assert_eq!(e.kind(), ErrorKind::NotConnected, "{name}: shutdown: {e}");
        }
        let got = expect_closed(&mut s, name);
        assert!(got.is_empty(), "{name}: the server answered {got:?}");
        let line = closing_line(node, from);
        for reason in reasons {
            assert!(
                line.contains(reason),
                "{name}: log line {line:?} lacks {reason:?}"
            );
        }
        assert_cluster_serves(&c, &format!("after-{name}"));
    }
    let r = node.client().get("/health");
    assert_eq!(r.status, 200, "{r}");
}

#[test]
fn a_correct_hello_is_answered_and_requests_work() {
    let mut c = Cluster::start(ClusterSpec::new(2, 2).plain());
    c.wait_replicas_reachable();
    let r = c
        .node(0)
        .client()
        .put(&kv_at("wire-key", Some("all")), b"wire-value");
    assert_eq!(r.status, 201, "{r}");
    let node = c.node(0);
    let mut s = connect(node);
    s.set_read_timeout(Some(CLOSE_WITHIN)).expect("timeout");
    s.write_all(&frame(&hello_body("itest", PROTOCOL, "n2")))
        .expect("send hello");

    let read_frame = |s: &mut TcpStream, what: &str| -> Vec<u8> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len)
            .unwrap_or_else(|e| panic!("{what}: no length prefix: {e}"));
        let len = u32::from_be_bytes(len) as usize;
        assert!(len < 4096, "{what}: frame of {len} bytes");
        let mut body = vec![0u8; len];
        s.read_exact(&mut body)
            .unwrap_or_else(|e| panic!("{what}: short frame: {e}"));
        body
    };
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);

    let hello = read_frame(&mut s, "hello");
    let mut start = vec![0x81];
    start.extend(fixstr("Hello"));
    assert!(hello.starts_with(&start), "not a hello: {hello:02x?}");
    assert!(contains(&hello, &fixstr("itest")), "{hello:02x?}");
    assert!(contains(&hello, &fixstr(&node.id)), "{hello:02x?}");

    // After the hello, requests are served on the same connection.
    s.write_all(&frame(&read_request_body(7, b"wire-key")))
        .expect("send request");
    let resp = read_frame(&mut s, "response");
    let mut start = vec![0x81];
    start.extend(fixstr("Response"));
    start.push(0x82);
    start.extend(fixstr("id"));
    start.push(7);
    assert!(
        resp.starts_with(&start),
        "not the response to id 7: {resp:02x?}"
    );
    assert!(contains(&resp, b"wire-value"), "{resp:02x?}");

    // A clean close between frames is not an error.
    let from = s.local_addr().expect("local addr");
    s.shutdown(Shutdown::Both).expect("shutdown");
    drop(s);
    assert_cluster_serves(&c, "after-good-hello");
    let needle = format!("({from}) closed: closed by the peer");
    let line = wait_until(Duration::from_secs(5), "the close is logged", || match node
        .log()
        .lines()
        .find(|l| l.contains(&needle))
    {
        Some(l) => Poll::Ready(l.to_string()),
        None => Poll::Pending(String::new()),
    });
    assert!(
        line.contains(" INFO "),
        "a clean close was logged as an error: {line}"
    );
}

//! The peer layer against real loopback sockets: calls, deadlines, lost
//! connections, oversized frames, and the server's checks and bounds.

use super::handshake::{self, FrameReader, FrameWriter};
use super::*;
use crate::wire::{Frame, Received, Request, Response, WireRecord, PROTOCOL_VERSION};
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn settings(me: &str, max_frame: usize) -> Arc<PeerSettings> {
    Arc::new(PeerSettings {
        hello: Hello {
            cluster: "t".into(),
            protocol: PROTOCOL_VERSION,
            node_id: me.into(),
            layout: 0,
        },
        max_frame,
        members: Arc::new(["a", "b"].iter().map(|s| s.to_string()).collect()),
        max_value: 1 << 20,
        faults: Arc::default(),
        tls: None,
        addresses: Arc::default(),
    })
}

fn read(key: &str) -> Request {
    Request::Read {
        key: Bytes::copy_from_slice(key.as_bytes()),
    }
}

fn background(key: &str) -> Request {
    Request::ReadMany {
        keys: vec![Bytes::copy_from_slice(key.as_bytes())],
        max_bytes: 100,
    }
}

/// Answers reads with the key as value; `ReadMany` of `"never"` never.
struct Echo;

impl Dispatch for Echo {
    fn dispatch(&self, _from: Rc<str>, request: Request) -> LocalBoxFuture<'static, Response> {
        Box::pin(async move {
            match request {
                Request::Read { key } if key.as_ref() == b"huge" => Response::Read {
                    record: Some(WireRecord {
                        ts: 1,
                        node: 1,
                        value: Some(Bytes::from(vec![0u8; 100_000])),
                    }),
                },
                Request::Read { key } => Response::Read {
                    record: Some(WireRecord {
                        ts: 1,
                        node: 1,
                        value: Some(key),
                    }),
                },
                Request::ReadMany { keys, .. } if keys[0].as_ref() == b"never" => {
                    std::future::pending().await
                }
                Request::ReadMany { keys, .. } => Response::Records {
                    items: keys.into_iter().map(|k| (k, None)).collect(),
                },
                _ => Response::error(crate::wire::ErrorCode::Invalid, "not in this test"),
            }
        })
    }
}

async fn serve_echo(max_frame: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = PeerServer::new(settings("b", max_frame), Rc::new(Echo));
    tokio::task::spawn_local(server.run(listener));
    addr
}

async fn client_of(addr: std::net::SocketAddr, max_frame: usize) -> PeerClient {
    let (client, run) = PeerClient::new(
        "b".into(),
        addr,
        settings("a", max_frame),
        Arc::new(AtomicBool::new(false)),
    );
    tokio::task::spawn_local(run);
    let started = Instant::now();
    while !client.is_connected() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never connected"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client
}

fn value(r: Response) -> Bytes {
    match r {
        Response::Read {
            record: Some(WireRecord { value: Some(v), .. }),
        } => v,
        other => panic!("unexpected {other:?}"),
    }
}

const T: Duration = Duration::from_secs(5);

#[actix::test]
async fn calls_are_answered_by_id_concurrently() {
    let addr = serve_echo(1 << 20).await;
    let c = client_of(addr, 1 << 20).await;
    let calls: Vec<_> = (0..50).map(|i| c.call(read(&format!("k{i}")), T)).collect();
    for (i, r) in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(value(r.unwrap()), format!("k{i}").as_bytes());
    }
    assert_eq!(c.pending_calls(), 0);
}

/// Regression (05 finding 2): an encoding failure or an oversized frame
/// inside the actix writer used to abort the process.
#[actix::test]
async fn an_oversized_request_fails_alone_and_the_connection_stays() {
    let addr = serve_echo(1 << 20).await;
    let c = client_of(addr, 10_000).await;
    let big = Request::Write {
        layout: 0,
        key: Bytes::from_static(b"k"),
        record: WireRecord {
            ts: 1,
            node: 1,
            value: Some(Bytes::from(vec![1u8; 20_000])),
        },
    };
    let err = c.call(big, T).await.unwrap_err();
    assert!(matches!(err, PeerError::FrameTooLarge { .. }), "{err}");
    assert!(err.is_definite());
    assert_eq!(
        value(c.call(read("still"), T).await.unwrap()),
        &b"still"[..]
    );
}

/// An answer too big for a frame becomes an error answer; the session lives.
#[actix::test]
async fn an_oversized_answer_becomes_an_error() {
    let addr = serve_echo(50_000).await;
    let c = client_of(addr, 1 << 20).await;
    let err = c.call(read("huge"), T).await.unwrap_err();
    assert_eq!(err.code(), Some(crate::wire::ErrorCode::Internal), "{err}");
    assert_eq!(
        value(c.call(read("after"), T).await.unwrap()),
        &b"after"[..]
    );
}

#[actix::test]
async fn not_connected_fails_at_once_and_definitely() {
    // A port nobody listens on.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (c, run) = PeerClient::new("b".into(), addr, settings("a", 1 << 20), Arc::default());
    tokio::task::spawn_local(run);
    let started = Instant::now();
    let err = c.call(read("x"), T).await.unwrap_err();
    assert!(matches!(err, PeerError::NotConnected { .. }), "{err}");
    assert!(err.is_definite());
    assert!(started.elapsed() < Duration::from_millis(100));
    c.shutdown();
}

/// A peer that speaks the hello and then never answers.
async fn silent_peer() -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Receiver<(FrameReader, FrameWriter)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_local(async move {
        let (stream, from) = listener.accept().await.unwrap();
        let conn = handshake::accept(stream, from, &settings("b", 1 << 20))
            .await
            .unwrap();
        let _ = tx.send((conn.1, conn.2));
    });
    (addr, rx)
}

#[actix::test]
async fn a_deadline_fails_the_call_and_forgets_it() {
    let (addr, conn) = silent_peer().await;
    let c = client_of(addr, 1 << 20).await;
    let _conn = conn.await.unwrap();
    let started = Instant::now();
    let err = c
        .call(read("x"), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PeerError::Timeout { sent: true, .. }),
        "{err}"
    );
    assert!(!err.is_definite(), "a sent request may have been applied");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(c.pending_calls(), 0);
}

/// Regression (05 finding 3): a dropped connection used to leave background
/// calls in flight and queued forever, stalling hint replay and repair.
#[actix::test]
async fn a_lost_connection_fails_everything_that_waited_on_it() {
    let (addr, conn) = silent_peer().await;
    let c = client_of(addr, 1 << 20).await;
    let (mut reader, writer) = conn.await.unwrap();
    let calls = vec![
        c.call(background("one"), Duration::from_secs(60)),
        c.call(background("two"), Duration::from_secs(60)),
        c.call(read("three"), Duration::from_secs(60)),
    ];
    let started = Instant::now();
    let closer = async move {
        // Two frames arrive (the foreground read and the first background
        // call); the second background call waits for the slot.
        for _ in 0..2 {
            reader.next().await.unwrap().unwrap();
        }
        drop((reader, writer));
    };
    let (results, ()) = tokio::join!(futures_util::future::join_all(calls), closer);
    assert!(started.elapsed() < Duration::from_secs(5));
    let sent: Vec<bool> = results
        .iter()
        .map(|r| match r {
            Err(PeerError::ConnectionLost { sent, .. }) => *sent,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(sent, vec![true, false, true], "the queued call never left");
    assert_eq!(c.pending_calls(), 0);
    // The client redials and serves new calls once a peer listens again.
}

/// Regression (05 finding 3): a background call that timed out used to keep
/// its slot, so no later background call ever went out.
#[actix::test]
async fn a_timed_out_background_call_frees_its_slot() {
    let addr = serve_echo(1 << 20).await;
    let c = client_of(addr, 1 << 20).await;
    let err = c
        .call(background("never"), Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Timeout { .. }), "{err}");
    let r = c.call(background("next"), T).await.unwrap();
    assert!(matches!(r, Response::Records { .. }), "{r:?}");
}

#[actix::test]
async fn client_requests_overtake_queued_background_work() {
    let addr = serve_echo(1 << 20).await;
    let c = client_of(addr, 1 << 20).await;
    // One background call occupies the slot forever; more queue behind it.
    let blocked = c.call(background("never"), Duration::from_secs(3));
    // (Its deadline comes first: it must expire still queued, not squeeze
    // in as the blocked call's slot frees.)
    let queued = c.call(background("queued"), Duration::from_secs(2));
    let fg = async {
        let started = Instant::now();
        let r = c.call(read("fg"), T).await.unwrap();
        (value(r), started.elapsed())
    };
    let (b, q, (v, took)) = tokio::join!(blocked, queued, fg);
    assert_eq!(v, &b"fg"[..]);
    assert!(
        took < Duration::from_secs(1),
        "the client call waited {took:?}"
    );
    assert!(
        b.is_err() && q.is_err(),
        "the slot stayed taken until the deadline"
    );
}

async fn connect_raw(addr: std::net::SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

async fn hello_as(addr: std::net::SocketAddr, id: &str) -> (TcpStream, Vec<u8>) {
    let mut s = connect_raw(addr).await;
    let hello = crate::wire::encode_frame(
        &Frame::Hello(Hello {
            cluster: "t".into(),
            protocol: PROTOCOL_VERSION,
            node_id: id.into(),
            layout: 0,
        }),
        4096,
    )
    .unwrap();
    s.write_all(&hello).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    (s, got)
}

#[actix::test]
async fn hellos_of_strangers_and_impostors_are_refused() {
    let addr = serve_echo(1 << 20).await;
    for id in ["stranger", "b"] {
        let (_s, got) = hello_as(addr, id).await;
        assert!(got.is_empty(), "{id} got an answer: {got:?}");
    }
}

#[actix::test]
async fn a_silent_connection_is_closed_after_the_hello_timeout() {
    let addr = serve_echo(1 << 20).await;
    let mut s = connect_raw(addr).await;
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let took = started.elapsed();
    assert!(
        took >= HELLO_TIMEOUT - Duration::from_millis(100) && took < HELLO_TIMEOUT * 3,
        "{took:?}"
    );
}

#[actix::test]
async fn a_big_frame_before_the_hello_is_refused_from_its_prefix() {
    let addr = serve_echo(1 << 20).await;
    let mut s = connect_raw(addr).await;
    s.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[actix::test]
async fn invalid_requests_are_answered_with_an_error() {
    let addr = serve_echo(1 << 20).await;
    let c = client_of(addr, 1 << 20).await;
    let err = c.call(read(""), T).await.unwrap_err();
    assert_eq!(err.code(), Some(crate::wire::ErrorCode::Invalid), "{err}");
    assert!(err.is_definite());
}

#[actix::test]
async fn a_member_reconnecting_closes_its_oldest_session_beyond_the_cap() {
    let addr = serve_echo(1 << 20).await;
    let mut conns = Vec::new();
    for _ in 0..MAX_SESSIONS_PER_MEMBER + 1 {
        let st = settings("a", 1 << 20);
        conns.push(handshake::dial(addr, &st, "b").await.unwrap());
    }
    // The first session was closed by the server.
    let (mut first, _, _) = conns.remove(0);
    let end = tokio::time::timeout(Duration::from_secs(5), first.next())
        .await
        .expect("closed in time");
    assert!(end.is_none() || matches!(end, Some(Err(_))), "{end:?}");
    // The newest still works.
    let (mut r, mut w, _) = conns.pop().unwrap();
    let req = crate::wire::encode_frame(
        &Frame::Request {
            id: 1,
            body: read("x"),
        },
        1 << 20,
    )
    .unwrap();
    w.write_all(&req).await.unwrap();
    match r.next().await {
        Some(Ok(Received {
            frame: Frame::Response { id: 1, .. },
            ..
        })) => {}
        other => panic!("{other:?}"),
    }
}

/// Review of 05: with calls' deadlines shorter than the silence limit, the
/// watchdog never saw a call old enough and a dead connection stayed.
#[actix::test]
async fn a_silent_connection_is_replaced() {
    let (addr, conn) = silent_peer().await;
    let c = client_of(addr, 1 << 20).await;
    let _conn = conn.await.unwrap();
    let err = c
        .call(read("x"), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Timeout { .. }), "{err}");
    let started = Instant::now();
    while c.is_connected() {
        assert!(
            started.elapsed() < SILENCE_LIMIT + Duration::from_secs(3),
            "the silent connection was kept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A peer that reads our calls and answers each `late_ms` after it came
/// (`None`: never), plus, every 100 ms, an answer to an id we never used.
fn late_peer(mut reader: FrameReader, mut writer: FrameWriter, late_ms: Option<u64>) {
    tokio::task::spawn_local(async move {
        let answer = |id| {
            crate::wire::encode_frame(
                &Frame::Response {
                    id,
                    body: Response::Read { record: None },
                },
                1 << 20,
            )
            .unwrap()
        };
        let mut late = std::collections::VecDeque::new();
        let mut stranger = 1u64 << 40;
        loop {
            tokio::select! {
                frame = reader.next() => match frame {
                    Some(Ok(Received { frame: Frame::Request { id, .. }, .. })) => {
                        late.push_back((id, Instant::now()));
                    }
                    _ => return,
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    stranger += 1;
                    let mut out = answer(stranger).to_vec();
                    if let Some(ms) = late_ms {
                        while late.front().is_some_and(|(_, at): &(u64, Instant)| {
                            at.elapsed() > Duration::from_millis(ms)
                        }) {
                            let (id, _) = late.pop_front().unwrap();
                            out.extend_from_slice(&answer(id));
                        }
                    }
                    if writer.write_all(&out).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// Foreground calls of 200 ms until the connection goes or `for_at_most`
/// passed; answers how long it stayed.
async fn calls_until_replaced(c: &PeerClient, for_at_most: Duration) -> Duration {
    let started = Instant::now();
    while c.is_connected() && started.elapsed() < for_at_most {
        let err = c
            .call(read("x"), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                PeerError::Timeout { .. }
                    | PeerError::ConnectionLost { .. }
                    | PeerError::NotConnected { .. }
            ),
            "{err}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// Sweep L3: any response frame reset the watchdog, before it was checked
/// to answer a call of ours. A peer that answers none of our calls but
/// keeps sending answers to ids we never used kept a dead link open
/// forever. Now those do not count.
#[actix::test]
async fn answers_to_ids_never_used_do_not_keep_a_silent_connection() {
    let (addr, conn) = silent_peer().await;
    let c = client_of(addr, 1 << 20).await;
    let (reader, writer) = conn.await.unwrap();
    late_peer(reader, writer, None);
    let stayed = calls_until_replaced(&c, SILENCE_LIMIT + Duration::from_secs(4)).await;
    assert!(
        !c.is_connected(),
        "a connection answering none of our calls was kept"
    );
    assert!(
        stayed >= SILENCE_LIMIT - Duration::from_millis(500),
        "replaced after {stayed:?}, before the silence limit"
    );
}

/// Review of the sweep: a slow peer, answering every call after its caller
/// gave up, was replaced every silence limit, failing the background calls
/// it would have answered in time. A late answer to a call of ours is a
/// sign of life.
#[actix::test]
async fn late_answers_to_calls_given_up_on_keep_a_slow_connection() {
    let (addr, conn) = silent_peer().await;
    let c = client_of(addr, 1 << 20).await;
    let (reader, writer) = conn.await.unwrap();
    late_peer(reader, writer, Some(600));
    let stayed = calls_until_replaced(&c, SILENCE_LIMIT * 2).await;
    assert!(
        c.is_connected(),
        "a slow peer was replaced after {stayed:?}"
    );
}

/// A chaos run found a delete that came back: a write frame left in the
/// kernel's send queue of a connection we had given up on was retransmitted
/// and delivered after the partition healed — after the tombstone had been
/// purged. Peer connections now close abortively: what was not yet delivered
/// is discarded, never delivered late.
#[actix::test]
async fn a_connection_given_up_on_delivers_nothing_later() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut sender = TcpStream::connect(addr).await.unwrap();
    let (mut receiver, _) = listener.accept().await.unwrap();
    handshake::tune(&sender);
    assert_eq!(
        socket2::SockRef::from(&sender).linger().unwrap(),
        Some(Duration::ZERO)
    );
    // The receiver reads nothing (a partition): the send queue fills.
    let chunk = vec![7u8; 64 << 10];
    let mut queued = 0usize;
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(100), sender.write(&chunk)).await
    {
        queued += n;
    }
    drop(sender);
    // The partition heals: the receiver gets what its own buffer held, then
    // a reset — not the rest of what was queued.
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    let ended = loop {
        match tokio::time::timeout(T, receiver.read(&mut buf)).await {
            Ok(Ok(0)) => break "eof",
            Ok(Ok(n)) => got += n,
            Ok(Err(_)) => break "reset",
            Err(_) => break "silence",
        }
    };
    assert_eq!(ended, "reset", "after {got} of {queued} bytes");
    assert!(got < queued, "all {queued} queued bytes were delivered");
}

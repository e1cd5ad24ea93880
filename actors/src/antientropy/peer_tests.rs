//! The initiator against peers that are slow or lie, through a scripted
//! transport: what a pass does when a peer answers slowly, sends keys that
//! are not where it says, or records over the limits; and that every
//! request it builds fits the frame limit.

use super::initiator::roots_per_request;
use super::mover::request_prefix;
use super::pages::{in_spans, leaf_spans};
use super::*;
use crate::limits::{batch_budget, MAX_KEY_BYTES};
use crate::partition::Partitions;
use crate::peer::{Peers, Transport, TransportCall};
use crate::record::Record;
use crate::storage::{data_key, Store};
use crate::token::key_token;
use crate::version::Version;
use crate::wire::{encode_frame, Frame, WireRecord};
use bytes::Bytes;

/// How the scripted peer answers.
#[derive(Clone)]
struct Script {
    /// Wait this long before each answer.
    delay: Duration,
    /// Claim to hold this data key (in the leaves asked about that cover
    /// its token, as `trees` divides them), with a record of this many
    /// bytes of value.
    holds: Option<(Vec<u8>, usize)>,
    trees: Option<Store>,
    /// The keys of every record pushed to the peer.
    pushed: Arc<std::sync::Mutex<Vec<Bytes>>>,
}

struct Scripted(Script);

impl Transport for Scripted {
    fn call(&self, _node: &str, request: Request, _timeout: Duration) -> TransportCall {
        let s = self.0.clone();
        Box::pin(async move {
            tokio::time::sleep(s.delay).await;
            Ok(match request {
                // Every root and every tree node differs from ours.
                Request::PartitionRoots { partitions, .. } => Response::Hashes {
                    hashes: vec![1; partitions.len()],
                },
                Request::TreeHashes { indices, .. } => Response::Hashes {
                    hashes: vec![1; indices.len()],
                },
                Request::LeafVersions {
                    partition,
                    leaves,
                    after,
                    ..
                } => Response::Versions {
                    items: s
                        .holds
                        .iter()
                        .filter(|(dk, _)| {
                            let spans = s
                                .trees
                                .as_ref()
                                .and_then(|t| t.with_trees(|t| leaf_spans(t, partition, &leaves)));
                            after.is_none() && spans.is_some_and(|sp| in_spans(dk, &sp))
                        })
                        .map(|(dk, _)| (Bytes::copy_from_slice(dk), 1_000 << 16, 7))
                        .collect(),
                    next: None,
                },
                Request::ReadMany { keys, .. } => Response::Records {
                    items: keys
                        .into_iter()
                        .map(|k| {
                            let len = s.holds.as_ref().map_or(1, |h| h.1);
                            let r =
                                Record::value(Version::new(1_000 << 16, 7), vec![b'x'; len].into());
                            (k, Some(WireRecord::from(r)))
                        })
                        .collect(),
                },
                Request::WriteBatch { items } => {
                    let n = items.len() as u32;
                    let mut pushed = s.pushed.lock().unwrap();
                    pushed.extend(items.into_iter().map(|(k, _)| k));
                    Response::Batch {
                        applied: n,
                        refused: vec![],
                    }
                }
                _ => Response::Error {
                    code: crate::wire::ErrorCode::Invalid,
                    message: "not scripted".into(),
                },
            })
        })
    }

    fn reachable(&self, _node: &str) -> bool {
        true
    }
}

/// n1's anti-entropy with n2 and n3, both answering by `script`.
fn service(store: Store, script: Script, peer_budget: Duration) -> RepairService {
    let peers = Peers::over(vec!["n2".into(), "n3".into()], Arc::new(Scripted(script)));
    let core = crate::coordinator::testing::node_core_over(store, &["n1", "n2", "n3"], 3, peers);
    RepairService::new(
        core,
        RepairConfig {
            interval: Duration::from_secs(600),
            bandwidth_bytes_per_sec: 1 << 30,
            gc_grace_ms: 60_000,
            max_frame: 16 << 20,
            max_value: 1 << 10,
            peer_budget,
        },
    )
}

/// Review of issue 16: a peer answering every call slowly (each within the
/// deadline) used to hold the pass for hours — every partition differs,
/// every level is a call. Now each peer gets its budget of the pass and
/// the pass goes on with the next.
#[actix::test]
async fn a_slow_peer_gets_its_time_budget_and_the_pass_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script {
        delay: Duration::from_millis(20),
        holds: None,
        trees: None,
        pushed: Default::default(),
    };
    let store = Store::open(dir.path(), "n1", false).unwrap();
    let svc = service(store, script, Duration::from_millis(400));
    let partitions = Partitions::start(&svc, &actix::Arbiter::current());
    let started = std::time::Instant::now();
    let sum = crate::repair::run_pass(&svc, &partitions, None).await;
    let took = started.elapsed();
    // Unbounded, this pass makes 2 peers × 256 partitions × ≥ 8 calls of
    // 20 ms: over 80 s.
    assert!(took < Duration::from_secs(10), "the pass took {took:?}");
    let failed: Vec<&str> = sum.peers_failed.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(failed, ["n2", "n3"], "{sum:?}");
    assert!(
        sum.peers_failed
            .iter()
            .all(|(_, why)| why.contains(crate::partition::OUT_OF_BUDGET)),
        "{sum:?}"
    );
}

/// A data key whose token a peer claims is in the leaves asked about, but
/// whose key hashes elsewhere (it would plant a key in a partition we do
/// not replicate), or that is longer than any key may be, is refused.
#[test]
fn a_page_key_must_carry_its_own_token_and_a_key_within_the_limit() {
    let all = [(0u64, u64::MAX)];
    let good = data_key(b"k");
    assert!(in_spans(&good, &all));
    let mut forged = good.clone();
    forged[..8].copy_from_slice(&key_token(b"k").wrapping_add(1).to_be_bytes());
    assert!(
        !in_spans(&forged, &all),
        "a token that is not the key's own"
    );
    let long = data_key(&vec![b'k'; MAX_KEY_BYTES + 1]);
    assert!(!in_spans(&long, &all), "a key over the limit");
    assert!(!in_spans(&good[..8], &all), "a token without a key");
}

/// A record pulled from a peer with a value over the limit is not stored
/// (a write of it would be refused), and — third review of issue 16 — the
/// exchange goes on: failing it made every pass with that peer fail, and a
/// node waiting for a complete pass (repair mode) never served reads.
#[actix::test]
async fn a_pulled_record_over_the_value_limit_is_not_stored_and_the_exchange_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "n1", false).unwrap();
    let script = Script {
        delay: Duration::ZERO,
        holds: Some((data_key(b"big"), 4 << 10)),
        trees: Some(store.clone()),
        pushed: Default::default(),
    };
    let svc = service(store, script, Duration::from_secs(60));
    let p = svc.core.view().layout.partition_of_key(b"big");
    let mut sum = RunSummary::default();
    svc.sync_partition_with("n2", p, &mut sum)
        .await
        .expect("an oversized record does not fail the exchange");
    assert_eq!(svc.core.local.store.get(b"big").unwrap(), None);
    assert_eq!(sum.keys_pulled, 0, "{sum:?}");
}

/// Second review of issue 16: a record we hold over the value limit (stored
/// before the limit was lowered) made the peer refuse every push batch
/// holding it, so the exchange failed on every pass. It is left out; the
/// rest of the partition is pushed.
#[actix::test]
async fn a_record_over_the_value_limit_is_left_out_of_a_push() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "n1", false).unwrap();
    let script = Script {
        delay: Duration::ZERO,
        holds: None,
        trees: None,
        pushed: Default::default(),
    };
    let pushed = script.pushed.clone();
    let svc = service(store.clone(), script, Duration::from_secs(60));
    let p = svc.core.view().layout.partition_of_key(b"big");
    // A key of the same partition, written within the limit.
    let small = (0..)
        .map(|i| format!("small{i}"))
        .find(|k| svc.core.view().layout.partition_of_key(k.as_bytes()) == p)
        .unwrap();
    for (key, len) in [(b"big".to_vec(), 4 << 10), (small.clone().into_bytes(), 10)] {
        let record = Record::value(Version::new(1_000 << 16, 1), vec![b'x'; len].into());
        let op = crate::storage::WriteOp {
            key: key.into(),
            record,
        };
        store.apply(&[crate::storage::Mutation::Put(op)]).unwrap();
    }
    let mut sum = RunSummary::default();
    svc.sync_partition_with("n2", p, &mut sum)
        .await
        .expect("the exchange completes without the oversized record");
    let pushed = pushed.lock().unwrap().clone();
    assert_eq!(pushed, [Bytes::from(small)], "{sum:?}");
}

/// Review of issue 16: with a small frame limit and many partitions, the
/// roots request's answer and a pull of long keys overflowed the frame, so
/// every pass failed. Each request is now cut to fit.
#[test]
fn roots_and_pull_requests_fit_a_small_frame() {
    let max_frame = 16 << 10;
    let budget = batch_budget(max_frame);
    let frame = |id, r: Request| encode_frame(&Frame::Request { id, body: r }, max_frame);
    let answer = |id, r: Response| encode_frame(&Frame::Response { id, body: r }, max_frame);
    let per = roots_per_request(budget);
    let partitions: Vec<u32> = (0..4096u32).take(per).map(|p| p * 1_000_003).collect();
    let roots = Request::PartitionRoots {
        layout: u64::MAX,
        depth: 7,
        partitions,
    };
    frame(1, roots).expect("the roots request fits");
    answer(
        1,
        Response::Hashes {
            hashes: vec![u64::MAX; per],
        },
    )
    .expect("its answer fits");
    assert!(
        per < 4096,
        "4,096 roots do not fit 16 KiB, so they are split"
    );

    let keys: Vec<Bytes> = (0..256u32)
        .map(|i| {
            let mut k = vec![b'k'; MAX_KEY_BYTES];
            k[..4].copy_from_slice(&i.to_be_bytes());
            Bytes::from(k)
        })
        .collect();
    let n = request_prefix(&keys, budget);
    assert!((1..256).contains(&n), "{n}");
    let pull = Request::ReadMany {
        keys: keys[..n].to_vec(),
        max_bytes: budget as u32,
    };
    frame(2, pull).expect("the pull request fits");
    let short: Vec<Bytes> = (0..256u32)
        .map(|i| Bytes::from(i.to_be_bytes().to_vec()))
        .collect();
    assert_eq!(
        request_prefix(&short, budget),
        256,
        "short keys go 256 at a time"
    );
}

//! The replica actor: group commit, last write wins, the bounded queue, the
//! fail-stop on I/O failures, and batches that keep what they refuse.

use super::*;
use crate::faults::Faults;
use crate::storage::StoreOptions;
use crate::version::{Clock, Version};
use std::sync::Mutex;
use std::time::Duration;

fn op(key: &str, ts: u64) -> WriteOp {
    WriteOp {
        key: Bytes::copy_from_slice(key.as_bytes()),
        record: Record::value(Version::new(ts, 1), Bytes::from_static(b"v")),
    }
}

fn put(key: &str, ts: u64) -> Apply {
    Apply::foreground(vec![Mutation::Put(op(key, ts))])
}

#[actix::test]
async fn concurrent_writes_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "n1", true).unwrap();
    let stats = Arc::new(Metrics::default());
    let addr = ReplicaActor::new(store.clone(), stats.clone()).start();
    let sends: Vec<_> = (0..200)
        .map(|i| addr.send(put(&format!("k{i}"), 10)))
        .collect();
    for s in futures_util::future::join_all(sends).await {
        assert_eq!(
            s.unwrap().unwrap(),
            vec![Ok(WriteOutcome::Applied {
                replaced_live: false
            })]
        );
    }
    addr.send(Flush).await.unwrap();
    assert_eq!(stats.writes.load(Ordering::Relaxed), 200);
    let commits = stats.commits.load(Ordering::Relaxed);
    assert!(
        commits < 200,
        "200 concurrent writes took {commits} commits"
    );
    assert_eq!(store.len().unwrap(), 200);
}

#[actix::test]
async fn an_older_write_is_superseded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "n1", false).unwrap();
    let addr = ReplicaActor::new(store, Arc::default()).start();
    addr.send(put("k", 10)).await.unwrap().unwrap();
    let r = addr.send(put("k", 9)).await.unwrap().unwrap();
    assert_eq!(
        r,
        vec![Ok(WriteOutcome::Superseded {
            current: Version::new(10, 1),
            tombstone: false,
        })]
    );
}

fn slow_store(dir: &std::path::Path) -> (Store, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let options = StoreOptions {
        faults: faults.clone(),
        ..StoreOptions::new(true)
    };
    (Store::open_with(dir, "n1", options).unwrap(), faults)
}

/// Regression (05 finding 5): the write queue used to be an unbounded `Vec`
/// behind a mailbox whose cap never applied.
#[actix::test]
async fn a_full_queue_refuses_at_once_and_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = slow_store(dir.path());
    faults.apply("fsync_delay_ms = 200");
    let stats = Arc::new(Metrics::default());
    let limits = ReplicaLimits {
        max_queued_ops: 10,
        max_queued_bytes: usize::MAX,
    };
    let addr = ReplicaActor::new(store.clone(), stats.clone())
        .with_limits(limits)
        .start();
    let sends: Vec<_> = (0..100)
        .map(|i| addr.send(put(&format!("k{i}"), 10)))
        .collect();
    let started = std::time::Instant::now();
    let results = futures_util::future::join_all(sends).await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    for (i, r) in results.into_iter().enumerate() {
        match r.unwrap() {
            Ok(_) => accepted.push(i),
            Err(StoreError::Overloaded(_)) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(
        refused >= 80,
        "only {refused} of 100 refused with a queue of 10"
    );
    assert!(accepted.len() >= 10, "{} accepted", accepted.len());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(stats.writes_overloaded.load(Ordering::Relaxed), refused);
    faults.apply("");
    for i in accepted {
        assert!(store.get(format!("k{i}").as_bytes()).unwrap().is_some());
    }
}

/// Sweep of 10 (M4): background batches (a peer's anti-entropy or hint
/// batches) filled the whole queue and every client write answered 503.
#[actix::test]
async fn background_work_leaves_room_for_client_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = slow_store(dir.path());
    faults.apply("fsync_delay_ms = 300");
    let stats = Arc::new(Metrics::default());
    let limits = ReplicaLimits {
        max_queued_ops: 40,
        max_queued_bytes: usize::MAX,
    };
    let addr = ReplicaActor::new(store.clone(), stats)
        .with_limits(limits)
        .start();
    // A commit in progress, then a flood of background batches of 5.
    let first = addr.send(put("first", 10));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let batches: Vec<_> = (0..20)
        .map(|b| {
            let muts = (0..5)
                .map(|i| Mutation::Put(op(&format!("bg{b}-{i}"), 10)))
                .collect();
            addr.send(Apply::background(muts))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Client writes still find room: the background holds at most half.
    let client: Vec<_> = (0..15)
        .map(|i| addr.send(put(&format!("fg{i}"), 10)))
        .collect();
    let client = futures_util::future::join_all(client).await;
    let batches = futures_util::future::join_all(batches).await;
    first.await.unwrap().unwrap();
    assert!(client.iter().all(|r| matches!(r, Ok(Ok(_)))), "{client:?}");
    let refused = batches
        .iter()
        .filter(|r| matches!(r, Ok(Err(StoreError::Overloaded(_)))))
        .count();
    assert!(refused >= 16, "{refused} of 20 background batches refused");
    faults.apply("");
}

/// Regression (05 finding 6): after a failed fsync the store used to reopen
/// and carry on, serving what the page cache showed.
#[actix::test]
async fn a_failed_fsync_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = slow_store(dir.path());
    let fatal: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = fatal.clone();
    let addr = ReplicaActor::new(store, Arc::default())
        .on_fatal(Arc::new(move |e: &StoreError| {
            seen.lock().unwrap().push(e.to_string())
        }))
        .start();
    addr.send(put("a", 1)).await.unwrap().unwrap();
    faults.apply("fail_fsync = true");
    let err = addr.send(put("b", 1)).await.unwrap().unwrap_err();
    assert!(err.is_fatal(), "{err}");
    assert_eq!(fatal.lock().unwrap().len(), 1, "the fatal hook ran once");
    // Nothing more commits on that store.
    faults.apply("");
    let err = addr.send(put("c", 1)).await.unwrap().unwrap_err();
    assert!(err.is_fatal(), "{err}");
}

#[actix::test]
async fn mutations_of_one_apply_commit_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "n1", false).unwrap();
    let stats = Arc::new(Metrics::default());
    let addr = ReplicaActor::new(store.clone(), stats.clone()).start();
    let batch: Vec<_> = (0..50)
        .map(|i| Mutation::Put(op(&format!("b{i}"), 3)))
        .collect();
    let out = addr.send(Apply::foreground(batch)).await.unwrap().unwrap();
    assert_eq!(out.len(), 50);
    assert_eq!(stats.commits.load(Ordering::Relaxed), 1);
}

struct FixedClock(u64);

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        self.0
    }
}

/// Regression (05 finding 7): `write_batch` used to skip records refused for
/// clock drift yet answer success, so the hint holder deleted them.
#[actix::test]
async fn a_batch_reports_what_it_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "n1", false).unwrap();
    let stats = Arc::new(Metrics::default());
    let writer = ReplicaActor::new(store.clone(), stats.clone()).start();
    let now = 1_000_000;
    let local = LocalReplica {
        store: store.clone(),
        writer,
        hlc: Arc::new(Hlc::new(1, Arc::new(FixedClock(now)), 5_000)),
        stats,
        repairing: Arc::default(),
        repair_wanted: Arc::default(),
    };
    let rec = |ms: u64| Record::value(Version::new(crate::version::pack(ms, 0), 2), Bytes::new());
    let items = vec![
        (Bytes::from_static(b"a"), rec(now)),
        (Bytes::from_static(b"b"), rec(now + 60_000)),
        (Bytes::from_static(b"c"), rec(now - 1)),
    ];
    let out = local.write_batch(items).await.unwrap();
    assert_eq!(
        out,
        BatchOutcome {
            applied: 2,
            refused: vec![1]
        }
    );
    assert!(store.get(b"b").unwrap().is_none());
}

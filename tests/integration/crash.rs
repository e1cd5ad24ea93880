//! Crashes and hostile environments: kill -9 under load, a full disk, SIGTERM.

use crate::harness::{kv, Client, Cluster, ClusterSpec, Resp};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one writer thread saw: the last acknowledged (value, ETag) of each of
/// its keys, and the write that was in flight when the node went away (its
/// outcome is unknown, so either the old or the new value may survive).
struct WriterLog {
    acked: HashMap<String, (Vec<u8>, String)>,
    in_flight: Option<(String, Vec<u8>)>,
    acks: usize,
}

/// Load for a node that is about to be stopped.
struct Writers {
    /// Writes started so far (all threads).
    issued: Arc<AtomicUsize>,
    /// Set just before the node is stopped: from then on a transport error
    /// ends a writer; before, it fails the test.
    stopping: Arc<AtomicBool>,
    handles: Vec<JoinHandle<Result<WriterLog, String>>>,
}

impl Writers {
    /// `threads` writers PUT distinct keys `<prefix>-t<thread>-<n>`, every
    /// fourth write overwriting one of the thread's earlier keys, until
    /// `max_writes` writes were started in total, `limit` passed, or the node
    /// is gone.
    fn start(base: &str, prefix: &str, threads: usize, max_writes: usize, limit: Duration) -> Self {
        let issued = Arc::new(AtomicUsize::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let handles = (0..threads)
            .map(|t| {
                let (base, issued, stopping) = (base.to_string(), issued.clone(), stopping.clone());
                let prefix = prefix.to_string();
                std::thread::spawn(move || {
                    let c = Client::new(base);
                    let mut log = WriterLog {
                        acked: HashMap::new(),
                        in_flight: None,
                        acks: 0,
                    };
                    let mut keys: Vec<String> = Vec::new();
                    for n in 0.. {
                        if issued.fetch_add(1, Ordering::Relaxed) >= max_writes
                            || started.elapsed() > limit
                        {
                            break;
                        }
                        let key = if n % 4 == 3 {
                            keys[(n / 4) % keys.len()].clone()
                        } else {
                            let k = format!("{prefix}-t{t:02}-{n:05}");
                            keys.push(k.clone());
                            k
                        };
                        let value = format!("{key}/write-{n}/{}", "p".repeat(64)).into_bytes();
                        match c.send("PUT", &kv(&key), &[], Some(&value)) {
                            Ok(r) if r.status == 201 || r.status == 204 => {
                                let etag = r.etag();
                                log.acked.insert(key, (value, etag));
                                log.acks += 1;
                            }
                            Ok(r) => return Err(format!("PUT {key}: unexpected {r}")),
                            Err(_) if stopping.load(Ordering::SeqCst) => {
                                log.in_flight = Some((key, value));
                                break;
                            }
                            Err(e) => return Err(format!("PUT {key} before the stop: {e}")),
                        }
                    }
                    Ok(log)
                })
            })
            .collect();
        Writers {
            issued,
            stopping,
            handles,
        }
    }

    fn issued(&self) -> usize {
        self.issued.load(Ordering::Relaxed)
    }

    /// Call right before stopping the node.
    fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Waits for every writer (they end once the node is gone).
    fn join(self, node_log: impl Fn() -> String) -> Vec<WriterLog> {
        self.handles
            .into_iter()
            .map(|h| {
                h.join()
                    .expect("writer panicked")
                    .unwrap_or_else(|e| panic!("{e}\n{}", node_log()))
            })
            .collect()
    }
}

/// Checks one key. `acked`: last acknowledged (value, ETag); `in_flight`: a
/// value whose write may or may not have landed.
fn check_key(
    c: &Client,
    key: &str,
    acked: Option<&(Vec<u8>, String)>,
    in_flight: Option<&Vec<u8>>,
) -> Result<(), String> {
    let r = c
        .send("GET", &kv(key), &[], None)
        .map_err(|e| format!("GET {key}: {e}"))?;
    if let Some((value, etag)) = acked {
        if r.status == 200 && &r.body == value && r.header("etag") == Some(etag) {
            return Ok(());
        }
    } else if r.status == 404 {
        return Ok(());
    }
    if let Some(v) = in_flight {
        if r.status == 200 && &r.body == v {
            return Ok(());
        }
    }
    Err(format!(
        "key {key}: expected {:?} (or the in-flight {:?}), got {r}",
        acked.map(|(v, e)| (String::from_utf8_lossy(v), e)),
        in_flight.map(|v| String::from_utf8_lossy(v)),
    ))
}

/// Reads back every key of `logs` (4 threads); panics listing the keys that
/// lost their last acknowledged write.
fn verify(base: &str, logs: Vec<WriterLog>, after: &str) {
    let keys: usize = logs.iter().map(|l| l.acked.len()).sum();
    let logs = Arc::new(logs);
    let checkers: Vec<_> = (0..4)
        .map(|part| {
            let (logs, base) = (logs.clone(), base.to_string());
            std::thread::spawn(move || -> Vec<String> {
                let c = Client::new(base);
                let mut failures = Vec::new();
                for log in logs.iter().skip(part).step_by(4) {
                    let pending = log.in_flight.as_ref();
                    for (key, acked) in &log.acked {
                        let maybe = pending.filter(|(k, _)| k == key).map(|(_, v)| v);
                        if let Err(e) = check_key(&c, key, Some(acked), maybe) {
                            failures.push(e);
                        }
                    }
                    if let Some((key, v)) = pending.filter(|(k, _)| !log.acked.contains_key(k)) {
                        if let Err(e) = check_key(&c, key, None, Some(v)) {
                            failures.push(e);
                        }
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = checkers
        .into_iter()
        .flat_map(|h| h.join().expect("checker panicked"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {keys} keys lost their last acknowledged write after {after}; first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    const THREADS: usize = 32;
    const MAX_WRITES: usize = 20_000;
    const WRITE_PHASE: Duration = Duration::from_secs(2);
    // Writers stop by themselves after this even if the kill never came.
    const WRITER_LIMIT: Duration = Duration::from_secs(20);

    let mut cluster = Cluster::start(ClusterSpec::single());
    let base = cluster.node(0).base_url();
    let started = Instant::now();
    let writers = Writers::start(&base, "crash", THREADS, MAX_WRITES, WRITER_LIMIT);

    // Let the writers run, then kill the node while writes are in flight.
    while started.elapsed() < WRITE_PHASE && writers.issued() < MAX_WRITES {
        std::thread::sleep(Duration::from_millis(10));
    }
    writers.stopping();
    cluster.node_mut(0).kill9();
    let logs = writers.join(|| cluster.node(0).log());

    let acks: usize = logs.iter().map(|l| l.acks).sum();
    let keys: usize = logs.iter().map(|l| l.acked.len()).sum();
    let in_flight = logs.iter().filter(|l| l.in_flight.is_some()).count();
    println!(
        "crash: {acks} acknowledged writes to {keys} keys by {THREADS} threads, \
         {in_flight} writes in flight at kill -9"
    );
    assert!(acks > 0, "no write was acknowledged before the kill");

    cluster.node_mut(0).restart();
    verify(&base, logs, "kill -9 and restart");
}

/// A tmpfs mounted for the life of the guard; unmounted on drop.
struct TmpfsMount {
    path: PathBuf,
}

impl TmpfsMount {
    fn mount(path: &Path, size: &str) -> Result<TmpfsMount, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(TmpfsMount {
                path: path.to_path_buf(),
            })
        } else {
            Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn resize(&self, size: &str) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// A distinct 64 KiB value for write `i`.
fn big_value(i: usize) -> Vec<u8> {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn describe(r: &Resp) -> String {
    let code = serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string));
    match code {
        Some(code) => format!("{} {code}", r.status),
        None => r.status.to_string(),
    }
}

#[test]
fn full_disk_refuses_writes_and_keeps_serving() {
    const MAX_WRITES: usize = 1024;

    // Declared before the cluster: dropped after it (the node is killed first,
    // then the tmpfs is unmounted, then its mount point removed).
    let mount_dir = tempfile::tempdir().expect("temp dir");
    let disk = mount_dir.path().join("disk");
    std::fs::create_dir(&disk).expect("mkdir");
    let mount = match TmpfsMount::mount(&disk, "8m") {
        Ok(m) => m,
        Err(e) => {
            println!("SKIP full_disk_refuses_writes_and_keeps_serving: {e}");
            return;
        }
    };
    // A small reserve, so the 8 MiB disk takes some writes first; the first
    // 507 may come from the reserve check or from the file system itself.
    let mut cluster = Cluster::start(
        ClusterSpec::single()
            .data_dir(0, disk.join("n1"))
            .storage_toml("min_free_bytes = 1048576"),
    );
    let c = cluster.node(0).client();

    let mut expected: Vec<(String, Vec<u8>, String)> = Vec::new();
    let mut refused_key = None;
    for i in 0..MAX_WRITES {
        let key = format!("big-{i:04}");
        let value = big_value(i);
        let r = c.put(&kv(&key), &value);
        match r.status {
            201 => expected.push((key, value, r.etag())),
            507 => {
                let body = r.expect_error(507, "disk_full");
                println!("disk full: first 507 after {i} writes: {}", body["error"]);
                refused_key = Some(key);
                break;
            }
            _ => panic!(
                "write {i} to a filling disk: unexpected {r}\n{}",
                cluster.node(0).log()
            ),
        }
    }
    let refused_key = refused_key
        .unwrap_or_else(|| panic!("no 507 after {MAX_WRITES} writes of 64 KiB on an 8 MiB disk"));
    c.get(&kv(&refused_key)).expect_error(404, "not_found");
    assert!(
        !expected.is_empty(),
        "the disk was full before the first write"
    );

    let check_all = |c: &Client, expected: &[(String, Vec<u8>, String)], when: &str| {
        for (key, value, etag) in expected {
            let r = c.get(&kv(key));
            assert!(
                r.status == 200 && &r.body == value && r.header("etag") == Some(etag),
                "{when}: {key} should still read back its acknowledged value, got {}",
                describe(&r)
            );
        }
    };
    check_all(&c, &expected, "after the first 507");
    c.get("/health").expect_status(200);
    assert!(
        cluster.node_mut(0).is_running(),
        "the node exited on a full disk:\n{}",
        cluster.node(0).log()
    );

    // While the disk stays full, writes keep answering 507 (not a quorum
    // error) and change nothing.
    let big_new = c.put(&kv("big-after-full"), &big_value(MAX_WRITES));
    big_new.expect_error(507, "disk_full");
    let small_new = c.put(&kv("small-after-full"), b"tiny");
    println!(
        "disk full: after the first 507: 64 KiB PUT -> {}, small PUT -> {}",
        describe(&big_new),
        describe(&small_new)
    );
    assert!(
        small_new.status == 201 || small_new.status == 507,
        "a small write on a full disk must be stored or refused with 507, got {}",
        describe(&small_new)
    );
    if small_new.status == 201 {
        expected.push((
            "small-after-full".into(),
            b"tiny".to_vec(),
            small_new.etag(),
        ));
    }
    c.get(&kv("big-after-full")).expect_error(404, "not_found");
    check_all(&c, &expected, "after more writes on the full disk");
    c.get("/health").expect_status(200);
    c.get("/ready").expect_status(200);
    assert!(cluster.node_mut(0).is_running(), "the node exited");

    // Once space is freed, the node writes again without a restart.
    assert!(mount.resize("64m"), "could not grow the tmpfs");
    let r = c.put(&kv("after-resize"), &big_value(MAX_WRITES + 1));
    assert_eq!(
        r.status,
        201,
        "after space was freed, without restart: PUT -> {}\n{}",
        describe(&r),
        cluster.node(0).log()
    );
    expected.push(("after-resize".into(), big_value(MAX_WRITES + 1), r.etag()));
    check_all(&c, &expected, "after space was freed");

    // Observation: a clean stop, then a start on the same disk.
    let status = cluster.node_mut(0).sigterm();
    println!("disk full: SIGTERM on the full disk -> {status}");
    match cluster.node_mut(0).try_start() {
        Ok(()) => {
            check_all(&c, &expected, "after a restart");
            // 507 promised "the write was not stored".
            c.get(&kv(&refused_key)).expect_error(404, "not_found");
            let r = c.put(&kv("after-restart"), b"tiny");
            println!(
                "disk full: restart on the full disk works; small PUT -> {}",
                describe(&r)
            );
        }
        Err(e) => println!(
            "disk full: the node does not start on the full disk: {}; log tail:\n{}",
            e.reason,
            e.log
                .lines()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
    drop(cluster);
    drop(mount);
}

#[test]
fn sigterm_exits_cleanly_and_keeps_data() {
    const THREADS: usize = 4;
    const MAX_WRITES: usize = 5_000;
    const WRITER_LIMIT: Duration = Duration::from_secs(20);

    let mut cluster = Cluster::start(ClusterSpec::single());
    let base = cluster.node(0).base_url();
    let c = cluster.node(0).client();
    let mut expected = Vec::new();
    for i in 0..20 {
        let key = format!("term-{i}");
        let value = format!("value-{i}").into_bytes();
        let r = c.put(&kv(&key), &value);
        r.expect_status(201);
        expected.push((key, value, r.etag()));
    }
    c.delete(&kv("term-0")).expect_status(204);
    expected.remove(0);

    // SIGTERM while writers are busy (and `c` holds an idle keep-alive
    // connection): in-flight requests finish, the process exits 0.
    let writers = Writers::start(&base, "term", THREADS, MAX_WRITES, WRITER_LIMIT);
    let deadline = Instant::now() + Duration::from_secs(5);
    while writers.issued() < 200.min(MAX_WRITES) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    writers.stopping();
    let status = cluster.node_mut(0).sigterm();
    let logs = writers.join(|| cluster.node(0).log());
    assert!(
        status.success(),
        "SIGTERM must exit 0, got {status}\n{}",
        cluster.node(0).log()
    );
    let acks: usize = logs.iter().map(|l| l.acks).sum();
    println!("sigterm: {acks} writes acknowledged under load before the exit");

    cluster.node_mut(0).start();
    for (key, value, etag) in &expected {
        let r = c.get(&kv(key));
        r.expect_status(200);
        assert_eq!((&r.body, r.etag()), (value, etag.clone()), "{key}");
    }
    c.get(&kv("term-0")).expect_error(404, "not_found");
    verify(&base, logs, "SIGTERM and restart");
}

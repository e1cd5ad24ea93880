//! Starting a node: bad configurations and a data directory already in use.

use crate::harness::{kv, run_bin, Cluster, ClusterSpec, Finished, NodeEntry};
use std::path::Path;
use std::time::Duration;

/// A config error must end the process by itself, quickly.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

fn serve(config: &Path, node: &str) -> Finished {
    run_bin(
        &[
            "serve",
            "--config",
            config.to_str().expect("utf-8 path"),
            "--node",
            node,
        ],
        EXIT_TIMEOUT,
    )
}

/// Asserts a refused start: non-zero exit, and stderr naming the config
/// file and containing every one of `needles`.
fn assert_refused(run: &Finished, config: &Path, needles: &[&str]) {
    assert!(
        !run.status.success(),
        "ringkv must refuse to start; it exited with {}; stderr:\n{}",
        run.status,
        run.stderr
    );
    let path = config.display().to_string();
    assert!(
        run.stderr.contains(&path),
        "stderr does not name the config file {path}:\n{}",
        run.stderr
    );
    for needle in needles {
        assert!(
            run.stderr.contains(needle),
            "stderr does not mention {needle:?}:\n{}",
            run.stderr
        );
    }
}

#[test]
fn bad_configs_are_refused_naming_file_and_key() {
    let cluster = Cluster::create(ClusterSpec::single());
    let good = cluster.config_text();
    let http_addr = cluster.node(0).http_addr.to_string();
    let with_cluster_line =
        |line: &str| good.replacen("[cluster]\n", &format!("[cluster]\n{line}\n"), 1);
    let with_storage_line =
        |line: &str| good.replacen("[storage]\n", &format!("[storage]\n{line}\n"), 1);

    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown-key",
            with_cluster_line("replicas = 3"),
            vec!["replicas"],
        ),
        (
            "bad-address",
            good.replace(
                &format!("http_addr = \"{http_addr}\""),
                "http_addr = \"nowhere\"",
            ),
            vec!["nodes[0].http_addr", "'nowhere'"],
        ),
        (
            "r-too-big",
            with_cluster_line("r = 2"),
            vec!["cluster.r", "between 1 and"],
        ),
        (
            "w-too-big",
            with_cluster_line("w = 5"),
            vec!["cluster.w", "got 5"],
        ),
        (
            "n-too-big",
            good.replace("replication_factor = 1", "replication_factor = 3"),
            vec!["cluster.replication_factor"],
        ),
        (
            "value-limit",
            with_storage_line("max_value_bytes = 0"),
            vec!["storage.max_value_bytes"],
        ),
        (
            "durability",
            with_storage_line("durability = \"sometimes\""),
            vec!["durability", "sometimes"],
        ),
        ("not-toml", format!("{good}\n[[nodes]\n"), vec![]),
    ];
    for (name, text, needles) in cases {
        assert_ne!(text, good, "case {name} did not change the config");
        let path = cluster.path(format!("{name}.toml"));
        std::fs::write(&path, text).expect("write config");
        let run = serve(&path, "n1");
        assert_refused(&run, &path, &needles);
        assert_eq!(run.status.code(), Some(2), "case {name}: {}", run.stderr);
    }

    // A node id the config does not have: names the id and the known ones.
    let run = serve(&cluster.config_path, "n9");
    assert_refused(&run, &cluster.config_path, &["'n9'", "n1"]);

    // A config file that does not exist.
    let missing = cluster.path("missing.toml");
    let run = serve(&missing, "n1");
    assert_refused(&run, &missing, &["cannot read"]);

    // None of the refused starts touched the data directory.
    assert!(
        !cluster.node(0).data_dir.exists(),
        "a refused start created {}",
        cluster.node(0).data_dir.display()
    );
}

#[test]
fn second_process_on_the_same_data_dir_is_refused() {
    let mut cluster = Cluster::start(ClusterSpec::single());
    let c = cluster.node(0).client();
    let r = c.put(&kv("mine"), b"first process");
    r.expect_status(201);
    let etag = r.etag();

    // Same node id and data directory (absolute), different ports.
    let data_dir = cluster.node(0).data_dir.clone();
    assert!(data_dir.is_absolute());
    let spec = ClusterSpec::single();
    let mut entry: NodeEntry = spec.entries().remove(0);
    entry.data_dir = data_dir.clone();
    let second = cluster.path("second.toml");
    std::fs::write(&second, spec.render(&[entry])).expect("write config");

    let run = serve(&second, "n1");
    assert!(
        !run.status.success(),
        "a second process on {} must not start; stderr:\n{}",
        data_dir.display(),
        run.stderr
    );
    assert!(
        run.stderr.contains("already in use"),
        "stderr should say the data directory is already in use:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&data_dir.display().to_string()),
        "stderr should name the data directory:\n{}",
        run.stderr
    );

    // The first process is unaffected.
    assert!(cluster.node_mut(0).is_running(), "the first node died");
    c.get("/health").expect_status(200);
    let r = c.get(&kv("mine"));
    r.expect_status(200);
    assert_eq!((r.body.as_slice(), r.etag()), (&b"first process"[..], etag));
    c.put(&kv("still-writable"), b"yes").expect_status(201);
    assert_eq!(c.get(&kv("still-writable")).body, b"yes");
}

/// Third review of issue 16: a value limit lowered under stored values
/// left their hints and repairs undeliverable (each batch refused whole).
/// A node restarted on its data with a lower `storage.max_value_bytes` is
/// refused, naming the limit it needs; its data is untouched.
#[test]
fn a_lowered_value_limit_is_refused_at_start() {
    let mut cluster = Cluster::start(ClusterSpec::single());
    let c = cluster.node(0).client();
    c.put(&kv("kept"), &vec![b'v'; 5000]).expect_status(201);
    assert!(cluster.node_mut(0).sigterm().success());
    let data_dir = cluster.node(0).data_dir.clone();
    let spec = ClusterSpec::single().storage_toml("max_value_bytes = 1000");
    let mut entry: NodeEntry = spec.entries().remove(0);
    entry.data_dir = data_dir;
    let lowered = cluster.path("lowered.toml");
    std::fs::write(&lowered, spec.render(&[entry])).expect("write config");
    let run = serve(&lowered, "n1");
    assert!(!run.status.success(), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("max_value_bytes is 1000") && run.stderr.contains("at least"),
        "{}",
        run.stderr
    );
    cluster.node_mut(0).start();
    let r = cluster.node(0).client().get(&kv("kept"));
    r.expect_status(200);
    assert_eq!(r.body.len(), 5000);
}

/// The data directory holds every record and hint: a fresh node makes it
/// 0700 and its files 0600 even under umask 022, and tightens an existing
/// directory an older version left 0755 (saying so).
#[test]
fn a_nodes_data_is_private_even_under_umask_022() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    let mut cluster = Cluster::create(ClusterSpec::new(2, 1));
    // n2's directory exists already, world-readable.
    let wide = cluster.node(1).data_dir.clone();
    std::fs::create_dir_all(&wide).expect("mkdir");
    std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // SAFETY: umask(2) only sets this process's file mode mask, which the
    // nodes inherit; 022 is what most systems default to.
    let before = unsafe { libc::umask(0o022) };
    let started = cluster.start_all();
    // SAFETY: as above, restoring the mask.
    unsafe { libc::umask(before) };
    started.expect("start");
    cluster.wait_clocks_vouched();
    let c = cluster.node(0).client();
    c.put(&kv("private"), b"v").expect_status(201);
    for node in &cluster.nodes {
        let dir = &node.data_dir;
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
        let files: Vec<_> = std::fs::read_dir(dir)
            .expect("read data dir")
            .map(|e| e.expect("entry").path())
            .collect();
        assert!(!files.is_empty(), "{}", dir.display());
        for f in files {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
    }
    assert!(
        cluster.node(1).log().contains("had mode 0755"),
        "no warning about the wide directory:\n{}",
        cluster.node(1).log()
    );
}

//! The ringkv processes of a run, one per node namespace, started with
//! `ip netns exec` (which execs, so the pid is the node's own). Each node has
//! a log file and a fault file (the engine's test-only switches: a clock
//! offset, a delay on its peer transport). A node that exits without the
//! nemesis killing it is a crash, and the run fails.

use crate::netns::{run, Net};
use std::fs::{self, File};
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Ports every node listens on (at its own address).
pub const HTTP_PORT: u16 = 7000;
pub const PEER_PORT: u16 = 7100;

pub struct Node {
    pub id: String,
    pub ns: String,
    pub http: SocketAddrV4,
    log: PathBuf,
    fault_file: PathBuf,
    child: Option<Child>,
    /// Set while the nemesis keeps the node down on purpose.
    pub stopped_on_purpose: bool,
    pub paused: bool,
    pub crashes: Vec<String>,
}

/// Cluster settings the workloads rely on.
pub struct ClusterConfig {
    pub tombstone_grace_ms: u64,
    pub sloppy_quorum: bool,
}

/// Writes the cluster's config file.
pub fn write_config(dir: &Path, net: &Net, cfg: &ClusterConfig) -> Result<PathBuf, String> {
    let mut t = String::new();
    t.push_str("[cluster]\nname = \"chaos\"\nreplication_factor = 3\n");
    t.push_str("request_timeout_ms = 2000\nbackground_timeout_ms = 5000\n");
    t.push_str("\n[gossip]\ninterval_ms = 100\n");
    t.push_str(&format!(
        "\n[hints]\nsloppy_quorum = {}\nmax_age_ms = 20000\n",
        cfg.sloppy_quorum
    ));
    t.push_str(&format!(
        "\n[repair]\nanti_entropy_interval_ms = 15000\ntombstone_grace_ms = {}\n",
        cfg.tombstone_grace_ms
    ));
    t.push_str("\n[testing]\nfault_file = \"faults-{node}.txt\"\n");
    // Peers talk mutual TLS, as in production; clients plain HTTP.
    t.push_str("\n[security]\npeer_tls = true\nhttp_tls = false\n");
    write_certs(dir, net)?;
    for i in 0..net.nodes {
        t.push_str(&format!(
            "\n[[nodes]]\nid = \"n{n}\"\nhttp_addr = \"{ip}:{HTTP_PORT}\"\npeer_addr = \"{ip}:{PEER_PORT}\"\ndata_dir = \"data/n{n}\"\n",
            n = i + 1,
            ip = net.node_ip(i)
        ));
    }
    let path = dir.join("cluster.toml");
    fs::write(&path, t).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// A CA and one certificate per node under `dir/certs`.
fn write_certs(dir: &Path, net: &Net) -> Result<(), String> {
    use ringkv_actors::certgen::{Ca, NodeNames, Validity};
    let certs = dir.join("certs");
    fs::create_dir_all(&certs).map_err(|e| format!("{}: {e}", certs.display()))?;
    let write = |name: String, text: &str| {
        let p = certs.join(name);
        fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
    };
    let (ca, issued) = Ca::generate("chaos", Validity::days(2)).map_err(|e| e.to_string())?;
    write("ca.crt".into(), &issued.cert_pem)?;
    for i in 0..net.nodes {
        let names = NodeNames {
            ips: vec![std::net::IpAddr::V4(net.node_ip(i))],
            dns: vec![],
        };
        let pair = ca
            .issue_node(&format!("n{}", i + 1), &names, Validity::days(2))
            .map_err(|e| e.to_string())?;
        write(format!("n{}.crt", i + 1), &pair.cert_pem)?;
        write(format!("n{}.key", i + 1), &pair.key_pem)?;
    }
    Ok(())
}

impl Node {
    pub fn new(net: &Net, i: usize, dir: &Path) -> Node {
        let id = format!("n{}", i + 1);
        Node {
            http: SocketAddrV4::new(net.node_ip(i), HTTP_PORT),
            ns: net.node_ns(i),
            log: dir.join(format!("{id}.log")),
            fault_file: dir.join(format!("faults-{id}.txt")),
            id,
            child: None,
            stopped_on_purpose: false,
            paused: false,
            crashes: Vec::new(),
        }
    }

    pub fn start(&mut self, bin: &Path, config: &Path) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(bin)
            .args(["serve", "--config"])
            .arg(config)
            .args(["--node", &self.id])
            .env("RUST_LOG", "info")
            .current_dir(config.parent().unwrap_or(Path::new(".")))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.id))?;
        self.child = Some(child);
        self.stopped_on_purpose = false;
        self.paused = false;
        Ok(())
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// `kill -9`, on purpose.
    pub fn kill(&mut self) {
        if self.paused {
            self.signal(libc::SIGCONT);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stopped_on_purpose = true;
        self.paused = false;
    }

    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    /// Whether the process runs; records a crash if it exited unasked.
    pub fn check(&mut self) -> bool {
        let Some(c) = self.child.as_mut() else {
            return false;
        };
        match c.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.crashes
                    .push(format!("{} exited by itself: {status}", self.id));
                self.child = None;
                false
            }
            Err(_) => true,
        }
    }

    pub fn set_faults(&self, text: &str) {
        let tmp = self.fault_file.with_extension("tmp");
        let _ = fs::write(&tmp, text);
        let _ = fs::rename(&tmp, &self.fault_file);
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops the process for good (SIGTERM, then SIGKILL).
    pub fn shutdown(&mut self) {
        if self.paused {
            self.resume();
        }
        if let Some(mut c) = self.child.take() {
            self.signal_pid(c.id() as i32, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal_pid(&self, pid: i32, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.paused {
                self.signal_pid(c.id() as i32, libc::SIGCONT);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until every running node answers `/health` (from the client
/// namespace).
pub fn wait_healthy(client_ns: &str, nodes: &[SocketAddrV4]) -> Result<(), String> {
    let nodes = nodes.to_vec();
    crate::netns::in_ns(client_ns, move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(1))
            .build();
        let deadline = Instant::now() + Duration::from_secs(60);
        for n in nodes {
            loop {
                if agent.get(&format!("http://{n}/health")).call().is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("{n} did not answer /health"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    })?
}

/// Kills stray node processes of an earlier run in these namespaces.
pub fn kill_strays(net: &Net) {
    for i in 0..net.nodes {
        let ns = net.node_ns(i);
        if let Ok(pids) = run(&["ip", "netns", "pids", &ns]) {
            for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) on a pid found in our own namespace.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

//! Harness: one `ringkv serve` process — start, health, kill -9, SIGTERM, restart on its data, its log.

use super::*;

/// Why a node did not come up.
#[derive(Debug)]
pub struct StartFailure {
    pub node: String,
    pub reason: String,
    pub log: String,
}

impl StartFailure {
    /// The HTTP or peer port was taken (by another test's socket, most
    /// likely).
    pub fn is_bind_failure(&self) -> bool {
        self.log.contains("cannot listen for")
    }
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} did not start: {}\n----- log -----\n{}\n---------------",
            self.node, self.reason, self.log
        )
    }
}

/// One `ringkv serve` process (or the place for one while it is stopped).
pub struct Node {
    pub id: String,
    pub http_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    /// Resolved the way the binary resolves it.
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    /// stdout and stderr of every run of this node, appended.
    pub log_path: PathBuf,
    child: Option<Child>,
    exited: Option<ExitStatus>,
    runs: usize,
    /// What [`Node::client`] uses.
    pub access: Access,
    /// No layout places it until it joins: it coordinates nothing.
    pub standby: bool,
}

impl Node {
    pub fn new(entry: &NodeEntry, config_path: &Path, dir: &Path, access: Access) -> Node {
        let base = config_path.parent().unwrap_or(Path::new("."));
        Node {
            id: entry.id.clone(),
            http_addr: entry.http_addr,
            peer_addr: entry.peer_addr,
            data_dir: base.join(&entry.data_dir),
            config_path: config_path.to_path_buf(),
            log_path: dir.join(format!("{}.log", entry.id)),
            child: None,
            exited: None,
            runs: 0,
            access,
            standby: entry.standby,
        }
    }

    /// Starts the process without waiting for it to serve.
    pub fn spawn(&mut self) {
        assert!(!self.is_running(), "node {} is already running", self.id);
        self.runs += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open node log");
        writeln!(
            log,
            "===== harness: run #{} of node {} =====",
            self.runs, self.id
        )
        .expect("write node log");
        let stderr = log.try_clone().expect("clone log handle");
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--node")
            .arg(&self.id)
            .env("RUST_LOG", "info")
            .current_dir(self.config_path.parent().unwrap_or(Path::new(".")))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        self.child = Some(child);
        self.exited = None;
    }

    /// Polls `GET /health` until it answers 200; fails if the process exits
    /// or [`START_TIMEOUT`] passes.
    pub fn wait_healthy(&mut self) -> Result<(), StartFailure> {
        let probe = Client::for_access(self.base_url(), Duration::from_secs(1), &self.access);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(self.failure(format!("the process exited with {status}")));
            }
            if self.child.is_none() {
                return Err(self.failure("the process was never spawned".into()));
            }
            if let Ok(r) = probe.send("GET", "/health", &[], None) {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(self.failure(format!(
                    "GET /health did not answer 200 within {START_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn failure(&self, reason: String) -> StartFailure {
        StartFailure {
            node: self.id.clone(),
            reason,
            log: self.log(),
        }
    }

    /// Spawns and waits until healthy.
    pub fn try_start(&mut self) -> Result<(), StartFailure> {
        self.spawn();
        let r = self.wait_healthy();
        if r.is_err() && self.is_running() {
            self.kill9();
        }
        r
    }

    /// Spawns and waits until healthy; panics with the log otherwise.
    pub fn start(&mut self) {
        if let Err(e) = self.try_start() {
            panic!("{e}");
        }
    }

    /// Kills the process if it runs (SIGKILL), then starts it again on the
    /// same config, ports and data.
    pub fn restart(&mut self) {
        if self.is_running() {
            self.kill9();
        }
        self.start();
    }

    /// `kill -9` and reap. No-op if the process is not running.
    pub fn kill9(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if self.exited.is_none() {
                let _ = child.kill();
                self.exited = Some(child.wait().expect("wait for killed node"));
            }
        }
    }

    /// Sends SIGTERM and waits up to [`STOP_TIMEOUT`] for the exit; panics
    /// (after kill -9) with the log if it does not exit in time.
    pub fn sigterm(&mut self) -> ExitStatus {
        let pid = self.pid().expect("sigterm: node is not running");
        // SAFETY: plain kill(2) on our own child's pid, which is not reaped yet.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM): {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status() {
                return status;
            }
            if Instant::now() >= deadline {
                self.kill9();
                panic!(
                    "node {} did not exit within {STOP_TIMEOUT:?} of SIGTERM\n----- log -----\n{}",
                    self.id,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status, once the process has exited (reaps it).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Some(child) = self.child.as_mut() {
                self.exited = child.try_wait().expect("try_wait");
            }
        }
        self.exited
    }

    /// Spawned and not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    /// Pid of the running process.
    pub fn pid(&mut self) -> Option<u32> {
        if self.is_running() {
            self.child.as_ref().map(|c| c.id())
        } else {
            None
        }
    }

    pub fn base_url(&self) -> String {
        let scheme = if self.access.ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.http_addr)
    }

    /// `http(s)://<http_addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// An HTTP client for this node (over HTTPS, with the admin token, when
    /// the cluster is secured).
    pub fn client(&self) -> Client {
        self.client_with_timeout(HTTP_TIMEOUT)
    }

    /// [`Node::client`] with another request timeout.
    pub fn client_with_timeout(&self, timeout: Duration) -> Client {
        Client::for_access(self.base_url(), timeout, &self.access)
    }

    /// Writes the node's fault file (the node re-reads it within 100 ms; see
    /// the engine's `faults` module). Needs [`ClusterSpec::with_fault_files`].
    pub fn set_faults(&self, text: &str) {
        let dir = self.config_path.parent().unwrap_or(Path::new("."));
        let path = dir.join(format!("faults-{}.txt", self.id));
        let tmp = dir.join(format!(".faults-{}.tmp", self.id));
        fs::write(&tmp, text).expect("write fault file");
        fs::rename(&tmp, &path).expect("install fault file");
        // Let the node's 100 ms poll see it.
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Resident memory of the running process in bytes (from /proc).
    pub fn rss_bytes(&mut self) -> u64 {
        let pid = self.pid().expect("rss: node is not running");
        let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("VmRSS in /proc status")
    }

    /// Everything the node printed so far (all runs).
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<no log at {}: {e}>", self.log_path.display()))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

//! Harness: polling, cluster status, local records, signals.

use super::*;

/// Pause between two polls of [`wait_until`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Calls `probe` every [`POLL_INTERVAL`] until it answers `Some`, and returns
/// that. Panics naming `what` (and the last probe's note, see [`Poll`]) after
/// `timeout`. The number of attempts is bounded by the timeout.
pub fn wait_until<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Poll<T>) -> T {
    let deadline = Instant::now() + timeout;
    let max_attempts = (timeout.as_millis() / POLL_INTERVAL.as_millis()).max(1) + 1;
    let mut last = String::new();
    for _ in 0..max_attempts {
        match probe() {
            Poll::Ready(v) => return v,
            Poll::Pending(note) => last = note,
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    panic!("timed out after {timeout:?} waiting until {what}; last observation: {last}")
}

/// One observation of [`wait_until`]: done with a value, or not yet (with a
/// note on what was seen, for the failure message).
pub enum Poll<T> {
    Ready(T),
    Pending(String),
}

impl Cluster {
    /// [`wait_until`] for conditions on this cluster.
    pub fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        probe: impl FnMut() -> Poll<T>,
    ) -> T {
        wait_until(timeout, what, probe)
    }

    /// `GET /v1/cluster` of node `i` as JSON (panics on a transport error or
    /// a status other than 200).
    pub fn cluster_status(&self, i: usize) -> Value {
        self.nodes[i].cluster_status()
    }
}

impl Node {
    /// `GET /v1/cluster` as JSON; panics unless it answers 200.
    pub fn cluster_status(&self) -> Value {
        let r = self.client().get("/v1/cluster");
        r.expect_status(200);
        r.json()
    }

    /// `GET /v1/cluster`, or `None` when the node does not answer (yet).
    pub fn try_cluster_status(&self) -> Option<Value> {
        let c = Client::for_access(self.base_url(), Duration::from_secs(3), &self.access);
        match c.send("GET", "/v1/cluster", &[], None) {
            Ok(r) if r.status == 200 => Some(r.json()),
            _ => None,
        }
    }

    /// This node's own record of `key` (`GET /v1/admin/local/<key>`, no
    /// coordination): `None` on 404 (checked to be the JSON `not_found`).
    pub fn local(&self, key: &str) -> Option<Value> {
        let r = self
            .client()
            .get(&format!("/v1/admin/local/{}", encode_key(key.as_bytes())));
        match r.status {
            200 => Some(r.json()),
            404 => {
                r.expect_error(404, "not_found");
                None
            }
            _ => panic!("node {}: GET /v1/admin/local/{key}: {r}", self.id),
        }
    }

    /// The live value this node stores for `key` (`None`: nothing or a
    /// tombstone).
    pub fn local_value(&self, key: &str) -> Option<String> {
        self.local(key)
            .filter(|v| v["tombstone"] == false)
            .map(|v| {
                v["value_utf8"]
                    .as_str()
                    .unwrap_or("<not utf-8>")
                    .to_string()
            })
    }

    fn signal(&mut self, sig: libc::c_int, name: &str) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{name}: node {} is not running", self.id));
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({name}): {}", std::io::Error::last_os_error());
    }

    /// Freezes the process (SIGSTOP): it keeps its sockets but runs nothing.
    /// A stopped node is still killed by [`Node::kill9`] / drop.
    pub fn sigstop(&mut self) {
        self.signal(libc::SIGSTOP, "SIGSTOP");
    }

    /// Resumes a process frozen by [`Node::sigstop`].
    pub fn sigcont(&mut self) {
        self.signal(libc::SIGCONT, "SIGCONT");
    }
}

/// The entry of member `id` in a `/v1/cluster` document.
pub fn member<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["id"] == id))
        .unwrap_or_else(|| panic!("no member {id} in {status}"))
}

/// `/v1/kv/<key>?consistency=<level>` (`key` percent-encoded here; no query
/// for `None`: the configured default).
pub fn kv_at(key: &str, level: Option<&str>) -> String {
    let path = kv(&encode_key(key.as_bytes()));
    match level {
        Some(l) => format!("{path}?consistency={l}"),
        None => path,
    }
}

/// Asserts a 503 `unavailable` answer naming the consistency level, the
/// replicas required and received; returns the body.
pub fn expect_unavailable(r: &Resp, level: &str, required: u64, received: u64) -> Value {
    let v = r.expect_error(503, "unavailable");
    assert_eq!(v["consistency"], level, "consistency in {r}");
    assert_eq!(v["required"], required, "required in {r}");
    assert_eq!(v["received"], received, "received in {r}");
    v
}

/// The value of `ringkv_<name>_total` in node `i`'s `/metrics`.
pub fn metric(c: &Cluster, i: usize, name: &str) -> u64 {
    metric_series(c, i, &format!("ringkv_{name}_total"))
}

/// The value of one series in node `i`'s `/metrics`, named with its labels
/// exactly as rendered (e.g. `ringkv_commits_total` or
/// `ringkv_http_connections_refused_total{cap="total"}`).
pub fn metric_series(c: &Cluster, i: usize, series: &str) -> u64 {
    let text = c.node(i).client().get("/metrics").text();
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// A plain TCP connection to `to` from the loopback address `from` (any
/// 127.x.y.z: the node sees a different client address per source).
pub fn tcp_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::from((from, 0)).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(s.into())
}

/// Raises this process's soft limit of open files to its hard limit (tests
/// that hold thousands of sockets).
pub fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// Descriptors process `pid` holds now.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

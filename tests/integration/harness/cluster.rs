//! Harness: the cluster — a temporary directory with its config and one node per entry, certificates and tokens.

use super::*;

/// A temporary directory with a config file and one [`Node`] per entry.
/// Dropping it kills the nodes, then removes the directory.
pub struct Cluster {
    // Field order matters: nodes drop (and are killed) before the directory.
    pub nodes: Vec<Node>,
    pub spec: ClusterSpec,
    pub entries: Vec<NodeEntry>,
    pub config_path: PathBuf,
    pub dir: tempfile::TempDir,
    /// The admin token harness clients send (with `Security::tokens`).
    pub admin_token: Option<String>,
}

/// A development CA and a certificate per node under `dir/certs`, as
/// `ringkv certs init` makes them.
pub fn make_certs(dir: &Path, cluster: &str, entries: &[NodeEntry]) {
    use ringkv_actors::certgen::{Ca, NodeNames, Validity};
    let certs = dir.join("certs");
    fs::create_dir_all(&certs).expect("certs dir");
    let (ca, issued) = Ca::generate(cluster, Validity::days(30)).expect("CA");
    fs::write(certs.join("ca.crt"), &issued.cert_pem).expect("write CA");
    fs::write(certs.join("ca.key"), &issued.key_pem).expect("write CA key");
    for e in entries {
        let names = NodeNames {
            ips: vec![e.http_addr.ip()],
            dns: vec![],
        };
        let pair = ca
            .issue_node(&e.id, &names, Validity::days(30))
            .expect("node cert");
        fs::write(certs.join(format!("{}.crt", e.id)), &pair.cert_pem).expect("write cert");
        fs::write(certs.join(format!("{}.key", e.id)), &pair.key_pem).expect("write key");
    }
}

/// Appends a token with `role` (and `prefix`) to `dir/tokens.toml`.
pub fn add_token(dir: &Path, role: &str, prefix: Option<&str>) -> String {
    let role = role.parse().expect("role");
    let t = ringkv::token_cli::new_token(role, prefix.map(String::from), None, "itest".into())
        .expect("token");
    let record = t.record.clone();
    ringkv::auth::store::TokensFile::update(&dir.join("tokens.toml"), move |f| {
        f.tokens.push(record);
        Ok(())
    })
    .expect("write tokens file");
    t.token
}

/// How harness clients reach a node: the CA to check HTTPS with, the token
/// to send.
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub ca: Option<PathBuf>,
    pub token: Option<String>,
}

impl Cluster {
    /// Writes the config into a new temporary directory; starts nothing.
    pub fn create(spec: ClusterSpec) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("ringkv-itest-")
            .tempdir()
            .expect("create temp dir");
        let entries = spec.entries();
        let config_path = dir.path().join("cluster.toml");
        fs::write(&config_path, spec.render(&entries)).expect("write config");
        let s = spec.security;
        if s.peer_tls || s.http_tls {
            make_certs(dir.path(), &spec.name, &entries);
        }
        let admin_token = s.tokens.then(|| add_token(dir.path(), "admin", None));
        let access = Access {
            ca: s.http_tls.then(|| dir.path().join("certs/ca.crt")),
            token: admin_token.clone(),
        };
        let nodes = entries
            .iter()
            .map(|e| Node::new(e, &config_path, dir.path(), access.clone()))
            .collect();
        Cluster {
            nodes,
            spec,
            entries,
            config_path,
            dir,
            admin_token,
        }
    }

    /// A client of node `i` sending `token` (or none) instead of the admin
    /// token.
    pub fn client_with_token(&self, i: usize, token: Option<&str>) -> Client {
        let node = &self.nodes[i];
        Client::for_access(
            node.base_url(),
            HTTP_TIMEOUT,
            &Access {
                ca: node.access.ca.clone(),
                token: token.map(String::from),
            },
        )
    }

    /// Adds a token to the cluster's tokens file; answers it.
    pub fn add_token(&self, role: &str, prefix: Option<&str>) -> String {
        add_token(self.dir.path(), role, prefix)
    }

    /// Creates the cluster and starts every node, waiting until all answer
    /// `/health`. If a picked port was taken by someone else in the meantime,
    /// tries again with fresh ports. Panics with the node's log otherwise.
    pub fn start(spec: ClusterSpec) -> Cluster {
        let mut attempt = 1;
        loop {
            let mut cluster = Cluster::create(spec.clone());
            match cluster.start_all() {
                Ok(()) => return cluster,
                Err(e) if e.is_bind_failure() && attempt < START_ATTEMPTS => {
                    eprintln!(
                        "harness: port taken, retrying with fresh ports: {}",
                        e.reason
                    );
                    attempt += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Spawns every node that is not running, then waits for all of them.
    pub fn start_all(&mut self) -> Result<(), StartFailure> {
        for node in &mut self.nodes {
            if !node.is_running() {
                node.spawn();
            }
        }
        for node in &mut self.nodes {
            node.wait_healthy()?;
        }
        Ok(())
    }

    /// Waits until every running node can read at `consistency=all`: a few
    /// probe keys (spread over the ring) answer 200/404 rather than 503 on
    /// each node, i.e. its peer sessions are up. `/health` and `/ready` answer
    /// before that. Best effort for `replication_factor < nodes` (the probes
    /// may not touch every pair). Panics after [`START_TIMEOUT`].
    pub fn wait_replicas_reachable(&mut self) {
        self.wait_peers_reachable();
        self.wait_clocks_vouched();
    }

    /// The first half of [`Cluster::wait_replicas_reachable`]: reads at
    /// `all` work from every running node.
    pub fn wait_peers_reachable(&mut self) {
        const PROBES: usize = 32;
        let deadline = Instant::now() + START_TIMEOUT;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_running() || self.nodes[i].standby {
                continue;
            }
            let c = self.nodes[i].client_with_timeout(Duration::from_secs(2));
            let mut probe = 0;
            while probe < PROBES {
                let path = kv(&format!("__harness-probe-{probe}?consistency=all"));
                match c.send("GET", &path, &[], None) {
                    Ok(r) if r.status == 200 || r.status == 404 => {
                        probe += 1;
                        continue;
                    }
                    Ok(r) if Instant::now() >= deadline => panic!(
                        "node {} cannot reach its replicas: {r}\n{}",
                        self.nodes[i].id,
                        self.nodes[i].log()
                    ),
                    Err(e) if Instant::now() >= deadline => {
                        panic!("node {}: GET {path}: {e}", self.nodes[i].id)
                    }
                    _ => std::thread::sleep(Duration::from_millis(25)),
                }
            }
        }
    }

    /// Waits until every running node coordinates writes: gossip has
    /// measured its clock against the cluster's.
    pub fn wait_clocks_vouched(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_running() {
                continue;
            }
            let c = self.nodes[i].client_with_timeout(Duration::from_secs(2));
            loop {
                match c.send("GET", "/v1/cluster", &[], None) {
                    Ok(r) if r.status == 200 && r.json()["clock"]["vouched"] == true => break,
                    _ if Instant::now() >= deadline => panic!(
                        "node {} never had its clock measured\n{}",
                        self.nodes[i].id,
                        self.nodes[i].log()
                    ),
                    _ => std::thread::sleep(Duration::from_millis(25)),
                }
            }
        }
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    /// The config file's current text.
    pub fn config_text(&self) -> String {
        fs::read_to_string(&self.config_path).expect("read config")
    }

    /// A path inside the cluster's temporary directory.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }
}

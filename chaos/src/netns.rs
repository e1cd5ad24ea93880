//! The test network: one network namespace per node and one for the
//! clients, each with a veth into a bridge that lives in a namespace of its
//! own. Nothing is created in the root namespace and nothing has a default
//! route, so no packet can leave the machine; the suite never addresses the
//! namespaces from the root namespace.
//!
//! Faults on links are nftables rules in each node's own namespace (table
//! `inet chaos`, chains `input` and `output`), so healing is flushing those
//! chains. Bandwidth is a `tbf` qdisc on the node's interface (the kernel
//! here has no `netem`; latency is injected by the node's own peer transport,
//! see the engine's `faults` module).
//!
//! Everything is removed on drop, and namespaces a crashed earlier run left
//! behind (same prefix) are removed before a new network is made.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Runs a command; `Err` with its output when it fails.
pub fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why this machine cannot run the suite, if it cannot.
pub fn unsupported() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, nftables)".into());
    }
    for tool in ["ip", "nft", "tc"] {
        if run(&["sh", "-c", &format!("command -v {tool}")]).is_err() {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    let probe = "rkvprobe";
    let _ = run(&["ip", "netns", "del", probe]);
    if let Err(e) = run(&["ip", "netns", "add", probe]) {
        return Some(format!("cannot create network namespaces: {e}"));
    }
    let nft = run(&[
        "ip", "netns", "exec", probe, "nft", "add", "table", "inet", "probe",
    ]);
    let _ = run(&["ip", "netns", "del", probe]);
    nft.err()
        .map(|e| format!("nftables does not work in a namespace: {e}"))
}

/// The namespaces, addresses and links of one run.
pub struct Net {
    prefix: String,
    pub nodes: usize,
    made: Vec<String>,
}

/// First three octets of the private subnet.
const SUBNET: [u8; 3] = [10, 77, 0];

impl Net {
    /// Builds the network for `nodes` nodes and one client namespace.
    pub fn create(prefix: &str, nodes: usize) -> Result<Net, String> {
        remove_stale(prefix);
        let mut net = Net {
            prefix: prefix.to_string(),
            nodes,
            made: Vec::new(),
        };
        let br = net.bridge_ns();
        net.add_ns(&br)?;
        run(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &br, "link", "set", "br0", "up"])?;
        for i in 0..=nodes {
            let (ns, ip, port) = if i < nodes {
                (net.node_ns(i), net.node_ip(i), format!("p{i}"))
            } else {
                (net.client_ns(), net.client_ip(), "pc".to_string())
            };
            net.add_ns(&ns)?;
            run(&[
                "ip", "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &br,
            ])?;
            run(&["ip", "-n", &br, "link", "set", &port, "master", "br0"])?;
            run(&["ip", "-n", &br, "link", "set", &port, "up"])?;
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            if i < nodes {
                net.nft(i, "add table inet chaos")?;
                net.nft(
                    i,
                    "add chain inet chaos input { type filter hook input priority 0; }",
                )?;
                net.nft(
                    i,
                    "add chain inet chaos output { type filter hook output priority 0; }",
                )?;
            }
        }
        Ok(net)
    }

    fn add_ns(&mut self, ns: &str) -> Result<(), String> {
        run(&["ip", "netns", "add", ns])?;
        self.made.push(ns.to_string());
        Ok(())
    }

    pub fn bridge_ns(&self) -> String {
        format!("{}-br", self.prefix)
    }

    pub fn node_ns(&self, i: usize) -> String {
        format!("{}-n{}", self.prefix, i + 1)
    }

    pub fn client_ns(&self) -> String {
        format!("{}-c", self.prefix)
    }

    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 11 + i as u8)
    }

    pub fn client_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 100)
    }

    /// Runs `nft <command>` in node `i`'s namespace.
    pub fn nft(&self, i: usize, command: &str) -> Result<(), String> {
        let ns = self.node_ns(i);
        let mut args = vec!["ip", "netns", "exec", &ns, "nft"];
        args.extend(command.split_whitespace());
        run(&args).map(|_| ())
    }

    /// Drops node `i`'s traffic to and from `other` (a peer's address).
    pub fn drop_between(&self, i: usize, other: Ipv4Addr, percent: u8) -> Result<(), String> {
        let sample = if percent >= 100 {
            String::new()
        } else {
            format!("numgen random mod 100 < {percent} ")
        };
        self.nft(
            i,
            &format!("add rule inet chaos input ip saddr {other} {sample}drop"),
        )?;
        self.nft(
            i,
            &format!("add rule inet chaos output ip daddr {other} {sample}drop"),
        )
    }

    /// Limits node `i`'s outgoing bandwidth.
    pub fn slow(&self, i: usize, rate: &str) -> Result<(), String> {
        let ns = self.node_ns(i);
        run(&[
            "ip", "netns", "exec", &ns, "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf",
            "rate", rate, "burst", "32kbit", "latency", "400ms",
        ])
        .map(|_| ())
    }

    /// Removes every link fault of node `i`.
    pub fn heal(&self, i: usize) -> Result<(), String> {
        self.nft(i, "flush chain inet chaos input")?;
        self.nft(i, "flush chain inet chaos output")?;
        let ns = self.node_ns(i);
        let _ = run(&[
            "ip", "netns", "exec", &ns, "tc", "qdisc", "del", "dev", "eth0", "root",
        ]);
        Ok(())
    }

    pub fn heal_all(&self) -> Result<(), String> {
        (0..self.nodes).try_for_each(|i| self.heal(i))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

/// Deletes namespaces named with `prefix` (left by a run that was killed).
fn remove_stale(prefix: &str) {
    if let Ok(list) = run(&["ip", "netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if name.starts_with(&format!("{prefix}-")) {
                let _ = run(&["ip", "netns", "del", name]);
            }
        }
    }
}

/// Moves the calling thread into namespace `ns` (its sockets then live
/// there). Only ever called on threads the suite made for that purpose.
pub fn enter(ns: &str) -> Result<(), String> {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a valid namespace fd; affects only this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `f` on a fresh thread inside namespace `ns`.
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let ns = ns.to_string();
    std::thread::spawn(move || -> Result<T, String> {
        enter(&ns)?;
        Ok(f())
    })
    .join()
    .map_err(|_| "a thread in the client namespace panicked".to_string())?
}

//! `ringkv up`: starts every node of a config file as a child process
//! (`ringkv serve --node …`), prefixes each node's log lines with its id, and
//! stops them all (SIGTERM, then waits) on Ctrl-C or SIGTERM. If a node exits
//! by itself, the others keep running; when none is left, `up` exits non-zero.
//! Without `--only` it starts the file's initial nodes; `--only n4,n5`
//! starts just those nodes of the file (a node restarted on its own, or a
//! standby node, `initial = false`, started later to join a running
//! cluster); an id the file does not name is refused before anything
//! starts.
//!
//! With a `[security]` section, `up` first makes what is missing: a
//! development CA and node certificates (`ringkv certs init`), and — when
//! the tokens file does not exist yet — the file with one admin token, which
//! it prints (once).

use crate::config::Config;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

pub fn run(config_path: &Path, only: &[String]) -> ExitCode {
    let cfg = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringkv: {e}");
            return ExitCode::from(2);
        }
    };
    let chosen = match chosen_nodes(&cfg, only) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringkv: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = prepare_security(&cfg) {
        eprintln!("ringkv: {e}");
        return ExitCode::FAILURE;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(supervise(cfg, config_path, chosen))
}

/// The ids of the nodes to start: `only` (each named once, in the file's
/// order), or every initial node of the file when `only` is empty (a
/// standby node, `initial = false`, starts when named).
fn chosen_nodes(cfg: &Config, only: &[String]) -> Result<Vec<String>, String> {
    let known: Vec<&str> = cfg.nodes.iter().map(|n| n.id.as_str()).collect();
    if let Some(bad) = only.iter().find(|id| !known.contains(&id.as_str())) {
        return Err(format!(
            "--only names node {bad:?}, which the config does not describe (its nodes: {})",
            known.join(", ")
        ));
    }
    Ok(cfg
        .nodes
        .iter()
        .filter(|n| {
            if only.is_empty() {
                n.initial
            } else {
                only.iter().any(|o| o == &n.id)
            }
        })
        .map(|n| n.id.clone())
        .collect())
}

/// Certificates and the first admin token, when the config asks for them
/// and they are missing.
fn prepare_security(cfg: &Config) -> Result<(), String> {
    let Some(s) = &cfg.security else {
        println!("security is off: this config has no [security] section");
        return Ok(());
    };
    if s.uses_tls() {
        for line in crate::certs::init(cfg, crate::certs::NODE_DAYS, false)? {
            if !line.starts_with("kept") {
                println!("{line}");
            }
        }
    }
    let Some(file) = &s.tokens_file else {
        return Ok(());
    };
    let first = cfg
        .nodes
        .first()
        .map_or("127.0.0.1:7101", |n| n.http_addr.as_str());
    let scheme = if s.http_tls { "https" } else { "http" };
    let ca = if s.http_tls {
        format!("--cacert {} ", s.ca_file.display())
    } else {
        String::new()
    };
    if file.exists() {
        println!(
            "client tokens: {} (a new one: ringkv token create --config {} --role admin)",
            file.display(),
            cfg.path.display()
        );
        return Ok(());
    }
    let token = crate::token_cli::create_in(
        cfg,
        crate::auth::token::Role::Admin,
        None,
        None,
        "created by ringkv up".into(),
    )?;
    println!(
        "created {} with an admin token (shown only this once):\n\n  export RINGKV_TOKEN={}\n\n\
         try: curl {ca}-H \"Authorization: Bearer $RINGKV_TOKEN\" -X PUT --data-binary hi \
         {scheme}://{first}/v1/kv/hello\n",
        file.display(),
        token.token
    );
    Ok(())
}

/// Relays a child's output line by line, prefixed with its node id; the
/// handle ends once the child closed it.
fn spawn_prefixed(
    id: &str,
    out: impl AsyncRead + Unpin + Send + 'static,
    err: bool,
) -> tokio::task::JoinHandle<()> {
    let prefix = format!("[{id}] ");
    tokio::spawn(async move {
        let mut lines = BufReader::new(out).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if err {
                eprintln!("{prefix}{line}");
            } else {
                println!("{prefix}{line}");
            }
        }
    })
}

/// Waits (a bounded time) until the relays have passed on everything the
/// stopped nodes wrote, their last lines ("stopped cleanly") included.
async fn drain_relays(relays: Vec<tokio::task::JoinHandle<()>>) {
    let all = futures_util::future::join_all(relays);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), all).await;
}

async fn supervise(cfg: Config, config_path: &Path, chosen: Vec<String>) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ringkv: cannot find own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut children: Vec<(String, Child)> = Vec::new();
    let mut relays = Vec::new();
    // How long nodes get to stop after SIGTERM before they are killed: their
    // own graceful shutdown, and then some.
    let stop_grace = std::time::Duration::from_millis(cfg.http.shutdown_grace_ms + 10_000);
    for node in cfg.nodes.iter().filter(|n| chosen.contains(&n.id)) {
        let spawned = Command::new(&exe)
            .args(["serve", "--config"])
            .arg(config_path)
            .args(["--node", &node.id])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ringkv: cannot start node {}: {e}", node.id);
                stop_all(&mut children, stop_grace).await;
                return ExitCode::FAILURE;
            }
        };
        relays.push(spawn_prefixed(
            &node.id,
            child.stdout.take().expect("piped"),
            false,
        ));
        relays.push(spawn_prefixed(
            &node.id,
            child.stderr.take().expect("piped"),
            true,
        ));
        let scheme = match &cfg.security {
            Some(s) if s.http_tls => "https",
            _ => "http",
        };
        println!(
            "node {}: {scheme}://{} (peers {})",
            node.id, node.http_addr, node.peer_addr
        );
        children.push((node.id.clone(), child));
    }
    println!(
        "cluster '{}' is starting: {} nodes, N={}; Ctrl-C stops it",
        cfg.cluster.name,
        children.len(),
        cfg.n()
    );
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            eprintln!("ringkv: cannot install signal handlers");
            stop_all(&mut children, stop_grace).await;
            return ExitCode::FAILURE;
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                children.retain_mut(|(id, child)| match child.try_wait() {
                    Ok(Some(status)) => {
                        eprintln!("ringkv: node {id} exited ({status})");
                        false
                    }
                    _ => true,
                });
                if children.is_empty() {
                    eprintln!("ringkv: every node has exited");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    println!("stopping {} nodes", children.len());
    stop_all(&mut children, stop_grace).await;
    drain_relays(relays).await;
    ExitCode::SUCCESS
}

async fn stop_all(children: &mut Vec<(String, Child)>, grace: std::time::Duration) {
    for (_, child) in children.iter() {
        if let Some(pid) = child.id() {
            // SAFETY: sending a signal to our own child process.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    // A node drains and stops within its shutdown timeout; one that does
    // not (wedged disk, a bug) is killed, so `up` itself always ends.
    let deadline = tokio::time::Instant::now() + grace;
    for (id, child) in children.iter_mut() {
        let status = match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                eprintln!(
                    "ringkv: node {id} did not stop within {} s: killing it",
                    grace.as_secs()
                );
                let _ = child.start_kill();
                child.wait().await
            }
        };
        match status {
            Ok(status) => println!("node {id} stopped ({status})"),
            Err(e) => eprintln!("ringkv: waiting for node {id}: {e}"),
        }
    }
    children.clear();
}

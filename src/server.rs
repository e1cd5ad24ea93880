//! `ringkv serve`: one node's process — storage, actors and the HTTP server —
//! and its orderly shutdown.
//!
//! SIGTERM or SIGINT: the HTTP server stops accepting, lets in-flight requests
//! finish (up to [`SHUTDOWN_GRACE`]), then the replica actor flushes every
//! queued write, and the process exits 0.

use crate::config::{Config, Durability, NodeConfig};
use crate::http::{self, ApiState};
use actix::{Actor, Addr, Arbiter};
use actix_web::{web, App, HttpServer};
use ringkv_actors::partition::{ClusterView, MemberInfo, NodeCore, PartitionActor, Replication};
use ringkv_actors::peer::{PeerActor, PeerListener, PeerSettings};
use ringkv_actors::replica::{Flush, LocalReplica, ReplicaActor, WriteStats};
use ringkv_actors::ring::Ring;
use ringkv_actors::storage::{Store, StoreError};
use ringkv_actors::version::{node_tag, Hlc, SystemClock};
use ringkv_actors::wire::{Hello, PROTOCOL_VERSION};
use std::collections::HashMap;
use std::sync::Arc;

/// How long in-flight requests may take to finish at shutdown.
pub const SHUTDOWN_GRACE: u64 = 30;

/// Why a node could not start, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    #[error("cannot listen for {what} on {addr}: {err}")]
    Bind {
        what: &'static str,
        addr: String,
        err: std::io::Error,
    },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

pub async fn run(node: NodeConfig) -> Result<(), StartError> {
    let cfg = &node.cluster;
    let durable = cfg.storage.durability == Durability::Immediate;
    if !durable {
        log::warn!("storage.durability = none: acknowledged writes can be lost on a crash");
    }
    let store = Store::open(&node.data_dir, &node.id, durable)?;
    log::info!(
        "node {} opened {} ({} records)",
        node.id,
        node.data_dir.display(),
        store.len()?
    );
    let clock = Arc::new(SystemClock::default());
    let hlc = Arc::new(Hlc::new(
        node_tag(&node.id),
        clock,
        cfg.cluster.max_clock_drift_ms,
    ));
    let stats = Arc::new(WriteStats::default());
    let writer_arbiter = Arbiter::new();
    let replica_store = store.clone();
    let replica_stats = stats.clone();
    let replica = ReplicaActor::start_in_arbiter(&writer_arbiter.handle(), move |_| {
        ReplicaActor::new(replica_store, replica_stats)
    });
    let replication = Replication {
        n: cfg.n(),
        r: cfg.r(),
        w: cfg.w(),
        request_timeout: cfg.request_timeout(),
    };
    let local = LocalReplica {
        store,
        writer: replica.clone(),
        hlc,
        stats,
    };
    let peer_arbiter = Arbiter::new();
    let view = start_peers(&node, &peer_arbiter, local.clone())?;
    let core = Arc::new(NodeCore::new(node.id.clone(), local, replication, view));
    let max_value_bytes = cfg.storage.max_value_bytes;
    let node_id = node.id.clone();
    let server = HttpServer::new(move || {
        // One coordinator per worker thread: no shared mailbox on the hot path.
        let partition = PartitionActor::new(core.clone()).start();
        App::new()
            .app_data(web::Data::new(ApiState {
                node_id: node_id.clone(),
                partition,
                core: core.clone(),
                max_value_bytes,
            }))
            .configure(http::routes)
    })
    .shutdown_timeout(SHUTDOWN_GRACE)
    .disable_signals()
    .bind(node.http_addr)
    .map_err(|err| StartError::Bind {
        what: "HTTP",
        addr: node.http_addr.to_string(),
        err,
    })?
    .run();
    log::info!("node {} serving HTTP on {}", node.id, node.http_addr);
    let handle = server.handle();
    actix_rt::spawn(async move {
        let signal = shutdown_signal().await;
        log::info!("{signal} received: stopping (in-flight requests finish first)");
        handle.stop(true).await;
    });
    server.await?;
    log::info!("HTTP server stopped; flushing writes");
    if let Err(e) = replica.send(Flush).await {
        log::error!("flush at shutdown failed: {e}");
    }
    peer_arbiter.stop();
    writer_arbiter.stop();
    log::info!("node {} stopped cleanly", node.id);
    Ok(())
}

/// Binds the peer port, starts the listener and one session per other member
/// on `arbiter`, and returns the membership view the coordinator routes by.
fn start_peers(
    node: &NodeConfig,
    arbiter: &Arbiter,
    local: LocalReplica,
) -> Result<ClusterView, StartError> {
    let cfg: &Config = &node.cluster;
    let settings = Arc::new(PeerSettings {
        hello: Hello {
            cluster: cfg.cluster.name.clone(),
            protocol: PROTOCOL_VERSION,
            node_id: node.id.clone(),
        },
        max_frame: cfg.cluster.max_frame_bytes,
    });
    let bind_err = |err| StartError::Bind {
        what: "peers",
        addr: node.peer_addr.to_string(),
        err,
    };
    let listener = std::net::TcpListener::bind(node.peer_addr).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let listen_settings = settings.clone();
    arbiter.spawn(async move {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => PeerListener::run(l, listen_settings, local).await,
            Err(e) => log::error!("peer listener failed: {e}"),
        }
    });
    log::info!("node {} serving peers on {}", node.id, node.peer_addr);
    let mut peers: HashMap<String, Addr<PeerActor>> = HashMap::new();
    for other in cfg.nodes.iter().filter(|n| n.id != node.id) {
        let (id, addr, settings) = (
            other.id.clone(),
            other.peer_addr.parse().expect("validated"),
            settings.clone(),
        );
        let peer = PeerActor::start_in_arbiter(&arbiter.handle(), move |_| {
            PeerActor::new(id, addr, settings)
        });
        peers.insert(other.id.clone(), peer);
    }
    let members = cfg
        .nodes
        .iter()
        .map(|n| MemberInfo {
            id: n.id.clone(),
            http_addr: n.http_addr.clone(),
            peer_addr: n.peer_addr.clone(),
        })
        .collect();
    let ring = Ring::new(
        cfg.nodes.iter().map(|n| n.id.as_str()),
        cfg.cluster.vnodes as u32,
    );
    Ok(ClusterView {
        ring: Arc::new(ring),
        members,
        peers,
    })
}

/// Waits for SIGTERM or SIGINT; answers which one came.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            log::error!("cannot install signal handlers; stop the node with SIGKILL");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

//! `ringkv serve`: one node's process — storage, actors and the HTTP server —
//! and its orderly shutdown.
//!
//! SIGTERM or SIGINT: the HTTP server stops accepting, lets in-flight requests
//! finish (up to [`SHUTDOWN_GRACE`]), then the replica actor flushes every
//! queued write, and the process exits 0.

use crate::config::{Durability, NodeConfig};
use crate::http::{self, ApiState};
use actix::{Actor, Arbiter};
use actix_web::{web, App, HttpServer};
use ringkv_actors::partition::{NodeCore, PartitionActor, Replication};
use ringkv_actors::replica::{Flush, ReplicaActor, WriteStats};
use ringkv_actors::storage::{Store, StoreError};
use ringkv_actors::version::{node_tag, Hlc, SystemClock};
use std::sync::Arc;

/// How long in-flight requests may take to finish at shutdown.
pub const SHUTDOWN_GRACE: u64 = 30;

/// Why a node could not start, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    #[error("cannot listen for HTTP on {addr}: {err}")]
    Bind { addr: String, err: std::io::Error },
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
    let core = Arc::new(NodeCore::new(
        node.id.clone(),
        store,
        replica.clone(),
        hlc,
        replication,
    ));
    let max_value_bytes = cfg.storage.max_value_bytes;
    let node_id = node.id.clone();
    let server = HttpServer::new(move || {
        // One coordinator per worker thread: no shared mailbox on the hot path.
        let partition = PartitionActor::new(core.clone()).start();
        App::new()
            .app_data(web::Data::new(ApiState {
                node_id: node_id.clone(),
                partition,
                max_value_bytes,
            }))
            .configure(http::routes)
    })
    .shutdown_timeout(SHUTDOWN_GRACE)
    .bind(node.http_addr)
    .map_err(|err| StartError::Bind {
        addr: node.http_addr.to_string(),
        err,
    })?;
    log::info!("node {} serving HTTP on {}", node.id, node.http_addr);
    server.run().await?;
    log::info!("HTTP server stopped; flushing writes");
    if let Err(e) = replica.send(Flush).await {
        log::error!("flush at shutdown failed: {e}");
    }
    writer_arbiter.stop();
    log::info!("node {} stopped cleanly", node.id);
    Ok(())
}

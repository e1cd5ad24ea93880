//! `ringkv serve`: one node's process — storage, actors, peers and the HTTP
//! server — and its orderly shutdown.
//!
//! Start-up order: open the store (bumping the restart generation), start the
//! replica actor (writer arbiter), bind the peer port and start one peer
//! session per other member plus the gossip, hint and repair actors (peer
//! arbiter), start metadata consensus (`meta.redb` in the data directory;
//! its Raft task runs beside the HTTP server's), then serve HTTP (each handler coordinates its request on its
//! own worker).
//!
//! SIGTERM or SIGINT: the HTTP server stops accepting, lets in-flight requests
//! finish (up to `http.shutdown_grace_ms`), then the replica actor flushes
//! every queued write (up to [`FLUSH_TIMEOUT`]), peer connections close, and
//! the process exits 0 — within seconds, whatever its peers are doing.

use crate::config::{Config, Durability, NodeConfig};
use crate::http::body::BodyDeadlines;
use crate::http::body_budget::BodyBudget;
use crate::http::conn::deadlines::ConnLimits;
use crate::http::conn::guard::ConnGuard;
use crate::http::conn::serve::{serve, ServeOptions};
use crate::http::conn::table::TableLimits;
use crate::http::{self, ApiState};
use crate::secure::NodeSecurity;
use actix::{Addr, Arbiter};
use actix_web::{web, App};
use ringkv_actors::antientropy::RepairService;
use ringkv_actors::coordinator::{ClusterView, MemberInfo, NodeCore, Replication};
use ringkv_actors::faults::Faults;
use ringkv_actors::gossip::failure::DetectorConfig;
use ringkv_actors::gossip::GossipActor;
use ringkv_actors::inbound::Inbound;
use ringkv_actors::layout::{Layout, Member};
use ringkv_actors::meta::{MetaConfig, MetaService};
use ringkv_actors::node::{Node, NodeSettings};
use ringkv_actors::peer::{PeerClient, PeerServer, PeerSettings, Peers};
use ringkv_actors::repair::RepairActor;
use ringkv_actors::replica::{Flush, ReplicaLimits};
use ringkv_actors::storage::{HintLimits, Store, StoreError, StoreOptions};
use ringkv_actors::transition::Transition;
use ringkv_actors::version::{Clock, SystemClock};
use ringkv_actors::wire::{Hello, PROTOCOL_VERSION};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// How long the writer may take to flush at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Client connections being closed to make room (beyond the cap) at most.
const MAX_EVICTING: usize = 64;
/// A client connection must have waited this long for its next request to
/// be closed to make room for a new one.
const EVICT_AFTER_MS: u64 = 100;
/// Descriptors kept for everything but client connections: peer sessions,
/// the store, logs, files being reloaded.
const RESERVED_DESCRIPTORS: u64 = 256;

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
    #[error("security: {0}")]
    Security(String),
    #[error("layout: {0}")]
    Layout(String),
}

/// Everything the HTTP layer reaches.
pub struct Services {
    pub core: Arc<NodeCore>,
    pub gossip: Addr<GossipActor>,
    pub repair: Addr<RepairActor>,
    pub repair_service: RepairService,
    pub generation: u64,
    pub config: Config,
    /// Per peer: is its connection up now.
    pub peer_links: HashMap<String, Arc<AtomicBool>>,
    pub started: std::time::Instant,
    /// Bytes of request bodies being read now (bounded node-wide and per
    /// client).
    pub body_budget: Arc<BodyBudget>,
    pub body_deadlines: BodyDeadlines,
    /// The client connections.
    pub conns: Arc<ConnGuard>,
    /// Client tokens, when the config names a tokens file.
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// Cluster metadata agreed by Raft, or why it is not running here.
    pub meta: Result<MetaService, String>,
    /// This node's side of layout changes (when metadata runs).
    pub transition: Option<Transition>,
}

/// How long a starting node waits to apply the metadata it had committed.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);

pub async fn run(node: NodeConfig) -> Result<(), StartError> {
    let cfg = &node.cluster;
    let durable = cfg.storage.durability == Durability::Immediate;
    if !durable {
        log::warn!("storage.durability = none: acknowledged writes can be lost on a crash");
    }
    let faults = Arc::new(Faults::default());
    if let Some(file) = &cfg.testing.fault_file {
        let file = PathBuf::from(file.to_string_lossy().replace("{node}", &node.id));
        log::warn!(
            "testing.fault_file = {}: fault injection is on (a test-only setting)",
            file.display()
        );
        crate::fault_file::watch(file, faults.clone());
    }
    let security = Arc::new(NodeSecurity::load(&node).map_err(StartError::Security)?);
    let https = security.https_config().map_err(StartError::Security)?;
    let options = StoreOptions {
        durable,
        hint_limits: HintLimits {
            max_count: cfg.hints.max_per_node,
            max_bytes: cfg.hints.max_bytes_per_node,
            // With sloppy quorum a hint can be an acknowledged write's only
            // second copy: a full hint store refuses instead of dropping.
            evict: !(cfg.hints.enabled && cfg.hints.sloppy_quorum),
        },
        min_free_bytes: cfg.storage.min_free_bytes,
        faults: faults.clone(),
        partition_bits: cfg.cluster.partition_bits(),
    };
    let store = Store::open_with(&node.data_dir, &node.id, options)?;
    if node.clock_offset_ms != 0 {
        log::warn!(
            "clock_offset_ms = {} (a test-only setting)",
            node.clock_offset_ms
        );
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock {
        offset_ms: node.clock_offset_ms,
        faults: Some(faults.clone()),
    });
    let peer_arbiter = Arbiter::new();
    let writer_arbiter = Arbiter::new();
    let settings = peer_settings(&node, faults.clone(), security.peer());
    let (peers, peer_links) = start_peer_sessions(&node, &peer_arbiter, &settings);
    let group_commit = cfg.storage.group_commit;
    if !group_commit {
        log::warn!("storage.group_commit = false: one commit (fsync) per write");
    }
    let view = cluster_view(cfg, peers.clone());
    let started = Node::start(NodeSettings {
        id: node.id.as_str().into(),
        store,
        clock,
        layout: view.layout.clone(),
        members: view.members.clone(),
        peers: peers.clone(),
        replication: Replication {
            n: cfg.n(),
            r: cfg.r(),
            w: cfg.w(),
            request_timeout: cfg.request_timeout(),
            background_timeout: cfg.background_timeout(),
            hinted_handoff: cfg.hints.enabled,
            sloppy_quorum: cfg.hints.enabled && cfg.hints.sloppy_quorum,
            read_repair_blocking_all: cfg.repair.read_repair_blocking_all,
        },
        max_clock_drift_ms: cfg.cluster.max_clock_drift_ms,
        tombstone_grace_ms: cfg.repair.tombstone_grace_ms,
        hint_max_age_ms: cfg.hints.max_age_ms,
        max_frame: cfg.cluster.max_frame_bytes,
        max_value: cfg.storage.max_value_bytes,
        anti_entropy_interval: Duration::from_millis(cfg.repair.anti_entropy_interval_ms),
        repair_bandwidth_bytes_per_sec: cfg.repair.bandwidth_bytes_per_sec,
        gossip_interval: Duration::from_millis(cfg.gossip.interval_ms),
        detector: DetectorConfig {
            threshold: cfg.gossip.phi_threshold,
            max_samples: cfg.gossip.phi_window,
            ..DetectorConfig::with_interval(cfg.gossip.interval_ms)
        },
        replica_limits: ReplicaLimits {
            max_queued_bytes: cfg.storage.max_write_queue_bytes,
            ..ReplicaLimits::default()
        },
        group_commit,
        writer_arbiter: writer_arbiter.handle(),
        peer_arbiter: peer_arbiter.handle(),
    })?;
    // Route by the history this node last routed by, if it saved one,
    // before anything is served: never by the configured layout once the
    // cluster moved on (also when consensus cannot start below).
    match ringkv_actors::transition::saved::load(&node.data_dir) {
        Ok(Some(h)) => {
            let cur = started.core.view();
            log::info!(
                "routing by the saved layout history (newest version {})",
                h.current().version()
            );
            started
                .core
                .set_view(ClusterView::new(h, cur.members.clone(), cur.peers.clone()));
        }
        Ok(None) => {}
        Err(e) => {
            return Err(StartError::Layout(format!(
                "the saved layout history is unreadable ({e}); restore it, or remove it only \
                 if this node's metadata (meta.redb) is intact"
            )))
        }
    }
    security.clone().watch(started.core.local.stats.clone());
    let generation = started.generation;
    let core = started.core.clone();
    let replica = started.replica.clone();
    let gossip = started.gossip.clone();
    let repair = started.repair.clone();
    let repair_service = started.repair_service.clone();
    let members: Vec<String> = cfg.nodes.iter().map(|n| n.id.clone()).collect();
    // Metadata never keeps data from being served: a node whose consensus
    // cannot start (a corrupt or unwritable meta.redb) serves reads and
    // writes and says why in /v1/admin/layout and /metrics.
    let meta = MetaService::start(
        &node.id,
        &members,
        peers.clone(),
        (*view.layout).clone(),
        MetaConfig::new(node.data_dir.clone()),
    )
    .await
    .map_err(|e| {
        log::error!("metadata consensus is not running on this node: {e}");
        e
    });
    let mut inbound = started.inbound.clone();
    inbound.meta = meta.as_ref().ok().cloned();
    start_peer_listener(&node, &peer_arbiter, settings.clone(), inbound)?;
    // Route by the agreed history before serving a request: a node that
    // restarts after a change must not route by its configured layout.
    let transition = match &meta {
        Ok(meta) => Some(
            Transition::start(
                core.clone(),
                started.partitions.clone(),
                meta.clone(),
                node.data_dir.clone(),
                CATCH_UP_WAIT,
            )
            .await,
        ),
        Err(_) => None,
    };

    let h = &cfg.http;
    let max_connections = connection_cap(h.max_connections, cfg.nodes.len());
    let conns = ConnGuard::new(
        ConnLimits {
            head_timeout_ms: h.head_timeout_ms,
            idle_timeout_ms: h.idle_timeout_ms,
            keep_alive_ms: h.keep_alive_ms,
            response_timeout_ms: h.response_timeout_ms,
        },
        TableLimits {
            max_connections,
            max_per_address: h.max_connections_per_address,
            max_evicting: MAX_EVICTING,
            evict_after_ms: EVICT_AFTER_MS,
        },
    );
    let services = Arc::new(Services {
        core: core.clone(),
        gossip,
        repair,
        repair_service,
        generation,
        config: cfg.clone(),
        peer_links,
        started: std::time::Instant::now(),
        body_budget: BodyBudget::new(
            h.max_inflight_body_bytes,
            h.body_bytes_per_client(cfg.storage.max_value_bytes),
        ),
        body_deadlines: BodyDeadlines {
            total: Duration::from_millis(h.body_timeout_ms),
            idle: Duration::from_millis(h.idle_timeout_ms),
            min_bytes_per_sec: h.min_body_bytes_per_sec,
        },
        conns: conns.clone(),
        auth: security.auth.clone(),
        meta: meta.clone(),
        transition,
    });
    let max_value_bytes = cfg.storage.max_value_bytes;
    let node_id = node.id.clone();
    let app = move || {
        App::new()
            .app_data(web::Data::new(ApiState {
                node_id: node_id.clone(),
                services: services.clone(),
                max_value_bytes,
            }))
            .wrap(actix_web::middleware::from_fn(http::auth::guard))
            .wrap(http::conn::track::Track)
            .configure(http::routes)
    };
    let bind_err = |err| StartError::Bind {
        what: "HTTP",
        addr: node.http_addr.to_string(),
        err,
    };
    let scheme = if https.is_some() { "HTTPS" } else { "HTTP" };
    let listener = http_listener(node.http_addr).map_err(bind_err)?;
    let server = serve(
        listener,
        app,
        conns,
        ServeOptions {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            shutdown_timeout_s: cfg.http.shutdown_grace_ms.div_ceil(1000).max(1),
            tls: https.map(Arc::new),
            max_sockets: max_connections + 2 * MAX_EVICTING,
        },
    )
    .map_err(bind_err)?;
    log::info!("node {} serving {scheme} on {}", node.id, node.http_addr);
    let handle = server.handle();
    actix_rt::spawn(async move {
        let signal = shutdown_signal().await;
        log::info!("{signal} received: stopping (in-flight requests finish first)");
        handle.stop(true).await;
    });
    server.await?;
    log::info!("HTTP server stopped; flushing writes");
    match tokio::time::timeout(FLUSH_TIMEOUT, replica.send(Flush)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::error!("flush at shutdown failed: {e}"),
        Err(_) => log::error!("flush at shutdown did not finish in {FLUSH_TIMEOUT:?}"),
    }
    if let Ok(meta) = &meta {
        meta.shutdown().await;
    }
    peers.shutdown();
    peer_arbiter.stop();
    writer_arbiter.stop();
    log::info!("node {} stopped cleanly", node.id);
    Ok(())
}

/// The client port's listener (address reuse, a deep accept queue).
fn http_listener(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// `http.max_connections`, lowered so client connections cannot take the
/// descriptors peers, the store and reloads need: raises the soft limit of
/// open files to the hard one first.
fn connection_cap(configured: usize, members: usize) -> usize {
    let reserve = RESERVED_DESCRIPTORS + 2 * MAX_EVICTING as u64 + 8 * members as u64;
    let limit = raise_open_files_limit();
    let fits = limit.saturating_sub(reserve).max(16) as usize;
    if configured > fits {
        log::warn!(
            "http.max_connections = {configured} does not fit the open-files limit ({limit}, \
             {reserve} kept for peers and files): serving at most {fits} client connections \
             (raise the limit, e.g. LimitNOFILE= or ulimit -n)"
        );
        fits
    } else {
        configured
    }
}

/// Raises the soft limit of open files to the hard limit; answers the soft
/// limit in force.
fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

fn peer_settings(
    node: &NodeConfig,
    faults: Arc<Faults>,
    tls: Option<Arc<ringkv_actors::peer::tls::PeerTls>>,
) -> Arc<PeerSettings> {
    let cfg = &node.cluster;
    Arc::new(PeerSettings {
        hello: Hello {
            cluster: cfg.cluster.name.clone(),
            protocol: PROTOCOL_VERSION,
            node_id: node.id.clone(),
            layout: layout_of(cfg).fingerprint(),
        },
        max_frame: cfg.cluster.max_frame_bytes,
        members: Arc::new(
            cfg.nodes
                .iter()
                .map(|n| n.id.clone())
                .collect::<BTreeSet<_>>(),
        ),
        max_value: cfg.storage.max_value_bytes,
        faults,
        tls,
        addresses: Arc::new(
            cfg.nodes
                .iter()
                .map(|n| (n.id.clone(), n.peer_addr.parse().expect("validated")))
                .collect(),
        ),
    })
}

/// Starts one client per other member; answers them and their "connected
/// now" flags.
fn start_peer_sessions(
    node: &NodeConfig,
    arbiter: &Arbiter,
    settings: &Arc<PeerSettings>,
) -> (Peers, HashMap<String, Arc<AtomicBool>>) {
    let mut clients = HashMap::new();
    let mut links = HashMap::new();
    for other in node.cluster.nodes.iter().filter(|n| n.id != node.id) {
        let addr = other.peer_addr.parse().expect("validated");
        let connected = Arc::new(AtomicBool::new(false));
        let (client, run) =
            PeerClient::new(other.id.clone(), addr, settings.clone(), connected.clone());
        arbiter.spawn(run);
        clients.insert(other.id.clone(), client);
        links.insert(other.id.clone(), connected);
    }
    (Peers::new(clients), links)
}

fn start_peer_listener(
    node: &NodeConfig,
    arbiter: &Arbiter,
    settings: Arc<PeerSettings>,
    inbound: Inbound,
) -> Result<(), StartError> {
    let bind_err = |err| StartError::Bind {
        what: "peers",
        addr: node.peer_addr.to_string(),
        err,
    };
    let listener = std::net::TcpListener::bind(node.peer_addr).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    // The server keeps `Rc` state: build it on the arbiter's own thread.
    arbiter.spawn_fn(move || {
        actix_rt::spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => PeerServer::new(settings, Rc::new(inbound)).run(l).await,
                Err(e) => log::error!("peer listener failed: {e}"),
            }
        });
    });
    log::info!("node {} serving peers on {}", node.id, node.peer_addr);
    Ok(())
}

/// The first layout: the configured nodes not marked `initial = false`.
fn layout_of(cfg: &Config) -> Layout {
    Layout::initial(
        cfg.nodes
            .iter()
            .filter(|n| n.initial)
            .map(|n| Member::new(n.id.as_str())),
        cfg.cluster.replication_factor,
        cfg.cluster.partition_bits(),
    )
}

fn cluster_view(cfg: &Config, peers: Peers) -> ClusterView {
    let members = cfg
        .nodes
        .iter()
        .map(|n| MemberInfo {
            id: n.id.clone(),
            http_addr: n.http_addr.clone(),
            peer_addr: n.peer_addr.clone(),
        })
        .collect();
    ClusterView::stable(Arc::new(layout_of(cfg)), members, peers)
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

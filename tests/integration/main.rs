//! End-to-end tests of the `ringkv` binary: each test starts its own node
//! processes on free 127.0.0.1 ports in a temporary directory and talks HTTP to
//! them.
//!
//! * [`harness`]: configs, node processes, HTTP helpers (shared by all tests)
//! * [`kv`]: the key-value API against one node
//! * [`crash`]: kill -9, a full disk, SIGTERM
//! * [`startup`]: bad configurations and a data directory in use
//! * [`cluster`]: several nodes: levels, placement, failures, CLI, `ringkv up`
//! * [`metadata`]: the layout agreed by consensus across real processes,
//!   a leader lost, a voter majority lost
//! * [`peer_protocol`]: raw TCP on the peer port
//! * [`faults`]: hinted handoff, pauses, anti-entropy, read repair, tombstone
//!   GC, clock skew, liveness
//! * [`bounded`]: values at the size limit through every background path,
//!   peers killed mid-transfer or never reading, a full write queue, a failed
//!   fsync, clock steps across restarts, SIGTERM while peers misbehave
//! * [`hostile`]: forged hellos, gossip and clock samples on the peer port
//! * [`peer_conn`], [`fake_member`]: raw peer connections, both ways: to a
//!   node's peer port, and a fake member the nodes dial
//! * [`security`]: peer mTLS, HTTPS, tokens and roles, certificate
//!   rotation, `ringkv up` with security
//! * [`slow_clients`]: slow-loris heads, trickled and stalled bodies,
//!   clients that never read, connection floods
//! * [`semantics`]: the fault semantics step 06 fixed (lost strict writes,
//!   conditional writes that lose races, outcomes, expiring hints)

mod bounded;
mod cluster;
mod crash;
mod fake_member;
mod faults;
mod harness;
mod hostile;
mod kv;
mod membership;
mod metadata;
mod peer_conn;
mod peer_protocol;
mod security;
mod semantics;
mod slow_clients;
mod startup;

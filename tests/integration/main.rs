//! End-to-end tests of the `ringkv` binary: each test starts its own node
//! processes on free 127.0.0.1 ports in a temporary directory and talks HTTP to
//! them.
//!
//! * [`harness`]: configs, node processes, HTTP helpers (shared by all tests)
//! * [`kv`]: the key-value API against one node
//! * [`crash`]: kill -9, a full disk, SIGTERM
//! * [`startup`]: bad configurations and a data directory in use
//! * [`cluster`]: several nodes: levels, placement, failures, CLI, `ringkv up`
//! * [`peer_protocol`]: raw TCP on the peer port
//! * [`faults`]: hinted handoff, pauses, anti-entropy, read repair, tombstone
//!   GC, clock skew, liveness

mod cluster;
mod crash;
mod faults;
mod harness;
mod kv;
mod peer_protocol;
mod startup;

//! End-to-end tests of the `ringkv` binary: each test starts its own node
//! processes on free 127.0.0.1 ports in a temporary directory and talks HTTP to
//! them.
//!
//! * [`harness`]: configs, node processes, HTTP helpers (shared by all tests)
//! * [`kv`]: the key-value API against one node
//! * [`crash`]: kill -9, a full disk, SIGTERM
//! * [`startup`]: bad configurations and a data directory in use

mod crash;
mod harness;
mod kv;
mod startup;

//! Test harness: cluster configs, node processes and HTTP helpers.
//!
//! * [`ClusterSpec`] describes a cluster; [`Cluster::start`] writes its TOML
//!   into a fresh temporary directory and starts one [`Node`] process per
//!   `[[nodes]]` entry (ids `n1`, `n2`, …, free 127.0.0.1 ports, data under
//!   `data/<id>` relative to the config file unless overridden).
//! * [`Node`] owns one `ringkv serve` child process: start, health polling,
//!   kill -9, SIGTERM, restart on the same data, its log. The child is killed
//!   on drop.
//! * [`Client`] / [`Resp`]: blocking HTTP on ureq 2 that never turns a 4xx/5xx
//!   into an error; only transport failures are errors.

#![allow(dead_code)] // not every test module uses every helper

use percent_encoding::{percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The node binary built by cargo for this test crate.
pub const BIN: &str = env!("CARGO_BIN_EXE_ringkv");
/// How long a node may take to answer `GET /health` after it was spawned.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a node may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of every HTTP request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of [`Cluster::start`] when a picked port was taken meanwhile.
const START_ATTEMPTS: usize = 3;

mod bin;
mod cluster;
mod config;
mod http;
mod node;
mod poll;

pub use bin::*;
pub use cluster::*;
pub use config::*;
pub use http::*;
pub use node::*;
pub use poll::*;

//! The ringkv node: command-line pieces, configuration and the HTTP API on
//! top of the engine (`ringkv-actors`). The `ringkv` binary (`src/main.rs`)
//! is a thin command line over this library.
//!
//! Layout: [`config`] loads and validates the TOML; [`server`] wires storage,
//! actors and HTTP for one node; [`http`] holds the API; [`up`] supervises a
//! local cluster; [`client`] is the small command-line client;
//! [`admin_cli`] prints the agreed layout (`ringkv admin layout`).

pub mod admin_cli;
pub mod auth;
pub mod certs;
pub mod change_cli;
pub mod client;
pub mod config;
mod fault_file;
pub mod files;
pub mod http;
pub mod secure;
pub mod server;
pub mod status_cli;
pub mod token_cli;
pub mod up;

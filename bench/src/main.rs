//! `ringkv-bench`: load generator for ringkv. See `--help`.
//!
//! Layout:
//! * [`cli`]: arguments and their checks; [`workload`]: the operation mix;
//!   [`keys`]: key distributions and names; [`value`]: self-describing values;
//!   [`rng`]: the seeded generator.
//! * [`conn`]: keep-alive HTTP/1.1 connections; [`ops`]: one operation.
//! * [`load`], [`run`], [`verify`]: the phases; [`ledger`]: what was
//!   acknowledged, and the rule verify checks.
//! * [`stats`], [`report`], [`progress`], [`metrics`]: measuring and telling.
//! * [`app`]: the order of it all.

mod app;
mod cli;
mod conn;
mod ctx;
mod keys;
mod ledger;
mod load;
mod metrics;
mod ops;
mod progress;
mod report;
mod rng;
mod run;
mod stats;
mod value;
mod verify;
mod workload;

use cli::{CliError, Settings};
use std::process::ExitCode;

fn main() -> ExitCode {
    let settings = match Settings::parse_from(std::env::args_os()) {
        Ok(s) => s,
        Err(CliError::Clap(e)) => e.exit(),
        Err(CliError::Invalid(msg)) => {
            eprintln!("ringkv-bench: error: {msg}");
            eprintln!("Try 'ringkv-bench --help' for the options.");
            return ExitCode::from(2);
        }
    };
    let threads = settings
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringkv-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    ExitCode::from(runtime.block_on(app::run(settings)))
}

//! `ringkv`: the node binary and its command line.
//!
//! * `ringkv serve --config FILE --node ID`: run one node.
//!
//! Layout: [`config`] loads and validates the TOML; [`server`] wires storage,
//! actors and HTTP for one node; [`http`] holds the API.

mod config;
mod http;
mod server;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ringkv",
    version,
    about = "A Dynamo-style distributed key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of the cluster described by the config file.
    Serve {
        /// The cluster's TOML configuration.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
        /// Which [[nodes]] entry of the config this process is.
        #[arg(long, short)]
        node: String,
    },
}

fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, node } => {
            init_logging();
            let node = match config::Config::load(&config).and_then(|c| c.node(&node)) {
                Ok(n) => n,
                Err(e) => {
                    log::error!("{e}");
                    eprintln!("ringkv: {e}");
                    return ExitCode::from(2);
                }
            };
            let system = actix::System::new();
            match system.block_on(server::run(node)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("{e}");
                    eprintln!("ringkv: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

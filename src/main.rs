//! `ringkv`: the node binary and its command line.
//!
//! * `ringkv serve --config FILE --node ID`: run one node.
//! * `ringkv up --config FILE`: run every node of the file as child processes.
//! * `ringkv put|get|del KEY [VALUE|-] --node ADDR`: a small client.
//!
//! The modules live in the `ringkv` library (`src/lib.rs`) so tests and
//! fuzz targets can reach them.

use ringkv::{client, config, server, up};

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
    /// Start every node of the config file as a child process (a local cluster).
    Up {
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Store a value (from the argument, or stdin with `-` or no value).
    Put {
        key: String,
        value: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Print a key's value to stdout.
    Get {
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a key.
    Del {
        key: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args)]
struct Target {
    /// HTTP address of any node.
    #[arg(long, default_value = "127.0.0.1:7101", env = "RINGKV_NODE")]
    node: String,
    /// one, quorum or all (default: the cluster's r / w).
    #[arg(long)]
    consistency: Option<String>,
}

fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Up { config } => up::run(&config),
        Command::Put { key, value, target } => client::run(
            client::Op::Put { value },
            &key,
            &target.node,
            target.consistency.as_deref(),
        ),
        Command::Get { key, target } => client::run(
            client::Op::Get,
            &key,
            &target.node,
            target.consistency.as_deref(),
        ),
        Command::Del { key, target } => client::run(
            client::Op::Del,
            &key,
            &target.node,
            target.consistency.as_deref(),
        ),
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

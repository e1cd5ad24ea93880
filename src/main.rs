//! `ringkv`: the node binary and its command line.
//!
//! * `ringkv serve --config FILE --node ID`: run one node.
//! * `ringkv up --config FILE`: run every node of the file as child processes.
//! * `ringkv put|get|del KEY [VALUE|-] --node ADDR`: a small client.
//! * `ringkv certs init|renew --config FILE`: a development CA and node
//!   certificates.
//! * `ringkv token create|list|revoke --config FILE`: client tokens.
//! * `ringkv admin layout show|history --node ADDR [-o json]`: the layout
//!   history agreed by metadata consensus.
//!
//! The modules live in the `ringkv` library (`src/lib.rs`) so tests and
//! fuzz targets can reach them.

use ringkv::auth::token::Role;
use ringkv::{admin_cli, certs, change_cli, client, config, server, status_cli, token_cli, up};

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
        /// Start only these nodes of the file (comma-separated ids).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
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
    /// Certificates for the nodes of a config (see `[security]`).
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Client tokens in the config's `security.tokens_file`.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The cluster as one node sees it: each node's state, shares now and
    /// after the change in flight, partitions moving, hints, and what holds
    /// a change back.
    Status {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long, short, default_value = "table")]
        output: Output,
    },
    /// The partitions a node pulls for the layout change in flight.
    Transfers {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long, short, default_value = "table")]
        output: Output,
    },
    /// Cluster administration (needs an `admin` token when tokens are on).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// The layout agreed by metadata consensus.
    Layout {
        #[command(subcommand)]
        view: LayoutCommand,
    },
    /// Add a configured standby node (`initial = false`): it pulls its
    /// share, then serves it.
    Join {
        id: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Decommission a live node: its partitions stream to their new owners,
    /// then it owns nothing.
    Leave {
        id: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Drop a dead node: its partitions are rebuilt from the surviving
    /// replicas (says what may be lost).
    Remove {
        id: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// A new (standby) node takes over a dead node's partitions.
    Replace {
        dead: String,
        new: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Count a dead node as done with the change in flight (it will never
    /// report); says what may be lost.
    Skip {
        id: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

#[derive(clap::Args)]
struct ChangeArgs {
    /// Do it even past a refusal (a change in flight, a node down, fewer
    /// than N members): the answer says what is at risk.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    endpoint: Endpoint,
}

#[derive(Subcommand)]
enum LayoutCommand {
    /// The newest agreed version: members, shares, leader.
    Show {
        #[command(flatten)]
        endpoint: Endpoint,
        /// table or json
        #[arg(long, short, default_value = "table")]
        output: Output,
    },
    /// Every live version and each node's fence/sync/switch progress.
    History {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long, short, default_value = "table")]
        output: Output,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a development CA (unless there is one) and every node's key
    /// and certificate that is missing.
    Init {
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
        /// Validity of node certificates, in days.
        #[arg(long, default_value_t = certs::NODE_DAYS)]
        days: u32,
        /// Reissue node certificates that exist.
        #[arg(long)]
        force: bool,
    },
    /// Issue new node keys and certificates from the CA; running nodes
    /// reload them within a second (or on SIGHUP).
    Renew {
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
        /// Only this node.
        #[arg(long, short)]
        node: Option<String>,
        #[arg(long, default_value_t = certs::NODE_DAYS)]
        days: u32,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (it is shown only once).
    Create {
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
        /// read, write or admin.
        #[arg(long)]
        role: Role,
        /// Only keys starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Expiry, like 30d, 12h, 15m or 90s (default: never).
        #[arg(long)]
        expires_in: Option<String>,
        /// A note shown by `token list`.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List tokens (ids, roles, prefixes, expiry; never secrets).
    List {
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Revoke a token by id.
    Revoke {
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
        id: String,
    },
}

#[derive(clap::Args)]
struct Target {
    #[command(flatten)]
    endpoint: Endpoint,
    /// one, quorum or all (default: the cluster's r / w).
    #[arg(long)]
    consistency: Option<String>,
}

/// Which node to ask, and how.
#[derive(clap::Args)]
struct Endpoint {
    /// HTTP address of any node.
    #[arg(long, default_value = "127.0.0.1:7101", env = "RINGKV_NODE")]
    node: String,
    /// Bearer token (`<id>.<secret>`).
    #[arg(long, env = "RINGKV_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate to check the node's HTTPS certificate with (implies
    /// https:// when the address has no scheme).
    #[arg(long, env = "RINGKV_CA_FILE")]
    ca_file: Option<PathBuf>,
}

impl Endpoint {
    fn conn(&self) -> client::Conn<'_> {
        client::Conn {
            node: &self.node,
            consistency: None,
            token: self.token.as_deref(),
            ca_file: self.ca_file.as_deref(),
        }
    }
}

impl Target {
    fn conn(&self) -> client::Conn<'_> {
        client::Conn {
            consistency: self.consistency.as_deref(),
            ..self.endpoint.conn()
        }
    }
}

fn load_config(path: &std::path::Path) -> Result<config::Config, ExitCode> {
    config::Config::load(path).map_err(|e| {
        eprintln!("ringkv: {e}");
        ExitCode::from(2)
    })
}

/// Prints `lines`, or the error, and exits accordingly.
fn report(result: Result<Vec<String>, String>) -> ExitCode {
    match result {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringkv: {e}");
            ExitCode::FAILURE
        }
    }
}

fn certs_command(command: CertsCommand) -> ExitCode {
    let path = match &command {
        CertsCommand::Init { config, .. } | CertsCommand::Renew { config, .. } => config.clone(),
    };
    let cfg = match load_config(&path) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    report(match command {
        CertsCommand::Init { days, force, .. } => certs::init(&cfg, days, force),
        CertsCommand::Renew { node, days, .. } => certs::renew(&cfg, node.as_deref(), days),
    })
}

fn token_command(command: TokenCommand) -> ExitCode {
    match command {
        TokenCommand::Create {
            config,
            role,
            prefix,
            expires_in,
            note,
        } => {
            let cfg = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let expires = match expires_in.as_deref().map(token_cli::parse_duration) {
                Some(Err(e)) => {
                    eprintln!("ringkv: --expires-in: {e}");
                    return ExitCode::from(2);
                }
                Some(Ok(s)) => Some(s),
                None => None,
            };
            match token_cli::create_in(&cfg, role, prefix, expires, note) {
                Ok(t) => {
                    eprintln!(
                        "created token {} ({role}); it is shown only this once:",
                        t.record.id
                    );
                    println!("{}", t.token);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ringkv: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        TokenCommand::List { config } => match load_config(&config) {
            Ok(cfg) => report(token_cli::list(&cfg)),
            Err(code) => code,
        },
        TokenCommand::Revoke { config, id } => match load_config(&config) {
            Ok(cfg) => report(token_cli::revoke(&cfg, &id).map(|_| {
                vec![format!(
                    "revoked {id}; nodes stop accepting it within a second"
                )]
            })),
            Err(code) => code,
        },
    }
}

fn init_logging() {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,openraft=warn"),
    )
    .format_timestamp_millis()
    .init();
}

fn change_command(op: &str, id: &str, with: Option<&str>, c: &ChangeArgs) -> ExitCode {
    change_cli::change(&c.endpoint.conn(), op, id, with, c.force)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Up { config, only } => up::run(&config, &only),
        Command::Put { key, value, target } => {
            client::run(client::Op::Put { value }, &key, &target.conn())
        }
        Command::Get { key, target } => client::run(client::Op::Get, &key, &target.conn()),
        Command::Del { key, target } => client::run(client::Op::Del, &key, &target.conn()),
        Command::Certs { command } => certs_command(command),
        Command::Token { command } => token_command(command),
        Command::Admin {
            command: AdminCommand::Layout { view },
        } => {
            let (view, endpoint, output) = match view {
                LayoutCommand::Show { endpoint, output } => {
                    (admin_cli::LayoutView::Show, endpoint, output)
                }
                LayoutCommand::History { endpoint, output } => {
                    (admin_cli::LayoutView::History, endpoint, output)
                }
            };
            admin_cli::layout(&endpoint.conn(), view, matches!(output, Output::Json))
        }
        Command::Admin {
            command: AdminCommand::Join { id, change },
        } => change_command("join", &id, None, &change),
        Command::Admin {
            command: AdminCommand::Leave { id, change },
        } => change_command("leave", &id, None, &change),
        Command::Admin {
            command: AdminCommand::Remove { id, change },
        } => change_command("remove", &id, None, &change),
        Command::Admin {
            command: AdminCommand::Replace { dead, new, change },
        } => change_command("replace", &dead, Some(&new), &change),
        Command::Admin {
            command: AdminCommand::Skip { id, change },
        } => change_command("skip", &id, None, &change),
        Command::Status { endpoint, output } => {
            status_cli::status(&endpoint.conn(), matches!(output, Output::Json))
        }
        Command::Transfers { endpoint, output } => {
            change_cli::transfers(&endpoint.conn(), matches!(output, Output::Json))
        }
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

//! Command line: the clap definition, value parsers, and the checked
//! [`Settings`] the phases run with.

use crate::conn::{Access, Node};
use crate::keys::DistKind;
use crate::value::HEADER_LEN;
use crate::workload::{Mix, Preset};
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Longest key the server accepts is far above this; the prefix only needs
/// to leave room for the `-{index}` suffix.
const MAX_PREFIX_BYTES: usize = 200;
/// Largest value the bench writes (the server's default limit is 1 MiB).
const MAX_VALUE_SIZE: usize = 64 << 20;

#[derive(Parser, Debug)]
#[command(
    name = "ringkv-bench",
    version,
    about = "Load generator for ringkv: preload keys, run a read/write/delete mix \
             over persistent HTTP/1.1 connections, verify what was acknowledged.",
    after_help = "Examples:\n  \
      ringkv-bench --nodes 127.0.0.1:7101 --workload c --duration 10s\n  \
      ringkv-bench --nodes 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103 \\\n      \
      --read-consistency quorum --write-consistency quorum --phases load,run,verify\n  \
      ringkv-bench --distribution zipfian --zipf-theta 0.99 --rate 5000 --json out.json\n\n\
      Exit status: 0 success; 1 a node is unreachable, a client gave up, or verify \
      found mismatches; 2 bad arguments."
)]
pub struct Args {
    /// Comma-separated host:port HTTP addresses of the nodes; clients are
    /// spread over them round-robin.
    #[arg(long, default_value = "127.0.0.1:7101", value_name = "ADDRS")]
    pub nodes: String,
    /// Bearer token for a cluster with `security.tokens_file`.
    #[arg(long, env = "RINGKV_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate of the cluster: speak HTTPS, checking the nodes'
    /// certificates against it.
    #[arg(long, env = "RINGKV_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Concurrent clients, each with one keep-alive connection.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Size of the key space (keys {prefix}-0 .. {prefix}-{keys-1}).
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// How keys are chosen.
    #[arg(long, value_enum, default_value_t = DistKind::Uniform)]
    pub distribution: DistKind,
    /// Skew of zipfian and latest, in [0, 1).
    #[arg(long, default_value_t = 0.99)]
    pub zipf_theta: f64,
    /// Bytes per value (at least 24: the header naming key and write).
    #[arg(long, default_value_t = 1024, value_name = "BYTES")]
    pub value_size: usize,
    /// Operation mix preset: default (10 reads per write), a (50/50),
    /// b (95/5), c (read-only), write-only.
    #[arg(long, value_enum)]
    pub workload: Option<Preset>,
    /// Fraction of reads (instead of --workload).
    #[arg(long, conflicts_with = "workload", value_name = "FRACTION")]
    pub read_ratio: Option<f64>,
    /// Fraction of deletes, taken from the non-read share.
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    pub delete_ratio: f64,
    /// Consistency level of reads (default: omit the parameter, the server's r).
    #[arg(long, value_enum, default_value_t = Level::Default)]
    pub read_consistency: Level,
    /// Consistency level of writes and deletes (default: the server's w).
    #[arg(long, value_enum, default_value_t = Level::Default)]
    pub write_consistency: Level,
    /// Length of the run phase, e.g. 10s, 500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop the run phase after this many operations (or at --duration,
    /// whichever comes first).
    #[arg(long, value_name = "N")]
    pub ops: Option<u64>,
    /// Open loop: schedule this many operations per second in total, at fixed
    /// intervals per client; latency counts from the scheduled time. Default:
    /// unthrottled closed loop.
    #[arg(long, value_name = "OPS")]
    pub rate: Option<f64>,
    /// Seed of key and operation choices (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Phases to run, in this order: load (write every key once), run (the
    /// mix), verify (read back what was acknowledged at quorum).
    #[arg(long, default_value = "load,run", value_parser = parse_phases)]
    pub phases: Phases,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Per-request timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Timeout of each TCP connect (startup check and reconnects).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Reconnects each client may make after its connection failed, in total.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub max_reconnects: u32,
    /// Key name prefix.
    #[arg(long, default_value = "bench")]
    pub key_prefix: String,
    /// Runtime worker threads (default: available parallelism).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// A consistency level, or none (the server's default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Level {
    One,
    Quorum,
    All,
    /// Omit the parameter.
    Default,
}

impl Level {
    /// The `?consistency=` value, if any.
    pub fn param(self) -> Option<&'static str> {
        match self {
            Level::One => Some("one"),
            Level::Quorum => Some("quorum"),
            Level::All => Some("all"),
            Level::Default => None,
        }
    }

    pub fn name(self) -> &'static str {
        self.param().unwrap_or("default")
    }
}

/// Which phases run (always in the order load, run, verify).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Phases {
    pub load: bool,
    pub run: bool,
    pub verify: bool,
}

impl Phases {
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.load {
            v.push("load");
        }
        if self.run {
            v.push("run");
        }
        if self.verify {
            v.push("verify");
        }
        v
    }
}

pub fn parse_phases(s: &str) -> Result<Phases, String> {
    let mut p = Phases::default();
    for part in s.split(',').map(str::trim) {
        let slot = match part {
            "load" => &mut p.load,
            "run" => &mut p.run,
            "verify" => &mut p.verify,
            "" => return Err("empty phase name in the list".into()),
            other => {
                return Err(format!(
                    "unknown phase '{other}' (phases are load, run, verify)"
                ))
            }
        };
        if *slot {
            return Err(format!("phase '{part}' is listed twice"));
        }
        *slot = true;
    }
    Ok(p)
}

/// `10s`, `500ms`, `250us`, `2m`, `1h`, `1.5s`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "'{s}': unknown unit '{other}' (use ns, us, ms, s, m or h)"
            ))
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("'{s}' is too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Checked settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub nodes: Vec<Node>,
    pub clients: usize,
    pub keys: u64,
    pub distribution: DistKind,
    pub zipf_theta: f64,
    pub value_size: usize,
    /// The preset's name, or "custom" for --read-ratio.
    pub workload: String,
    pub mix: Mix,
    pub read_consistency: Level,
    pub write_consistency: Level,
    pub duration: Duration,
    pub ops: Option<u64>,
    pub rate: Option<f64>,
    pub seed: Option<u64>,
    pub phases: Phases,
    pub json: Option<PathBuf>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_reconnects: u32,
    pub key_prefix: String,
    pub threads: Option<usize>,
}

/// A command line that parsed but makes no sense.
#[derive(Debug)]
pub enum CliError {
    /// clap's own error (also --help and --version), printed by clap.
    Clap(clap::Error),
    Invalid(String),
}

impl Settings {
    pub fn parse_from<I, T>(args: I) -> Result<Settings, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args = Args::try_parse_from(args).map_err(CliError::Clap)?;
        Settings::from_args(args).map_err(CliError::Invalid)
    }

    pub fn from_args(a: Args) -> Result<Settings, String> {
        let access = std::sync::Arc::new(
            Access::new(a.ca_file.as_deref(), a.token.as_deref())
                .map_err(|e| format!("--ca-file/--token: {e}"))?,
        );
        let mut nodes = Vec::new();
        for raw in a.nodes.split(',') {
            let node =
                Node::parse_with(raw, access.clone()).map_err(|e| format!("--nodes: {e}"))?;
            if nodes.contains(&node) {
                return Err(format!("--nodes: {node} is listed twice"));
            }
            nodes.push(node);
        }
        if a.clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        if a.keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        if a.keys > u64::from(u32::MAX) {
            return Err(format!("--keys must be at most {}", u32::MAX));
        }
        if !(0.0..1.0).contains(&a.zipf_theta) {
            return Err(format!(
                "--zipf-theta must be at least 0 and below 1, not {}",
                a.zipf_theta
            ));
        }
        if a.value_size < HEADER_LEN {
            return Err(format!(
                "--value-size must be at least {HEADER_LEN} bytes (the header that names key and write)"
            ));
        }
        if a.value_size > MAX_VALUE_SIZE {
            return Err(format!(
                "--value-size must be at most {MAX_VALUE_SIZE} bytes"
            ));
        }
        let (workload, read) = match (a.workload, a.read_ratio) {
            (_, Some(r)) => ("custom".to_string(), r),
            (Some(p), None) => (p.name().to_string(), p.read_ratio()),
            (None, None) => (
                Preset::Default.name().to_string(),
                Preset::Default.read_ratio(),
            ),
        };
        let mix = Mix::new(read, a.delete_ratio)?;
        if a.duration.is_zero() {
            return Err("--duration must be more than 0".into());
        }
        if a.ops == Some(0) {
            return Err("--ops must be at least 1".into());
        }
        if let Some(r) = a.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err(format!(
                    "--rate must be a positive number of operations per second, not {r}"
                ));
            }
        }
        if a.timeout.is_zero() {
            return Err("--timeout must be more than 0".into());
        }
        if a.connect_timeout.is_zero() {
            return Err("--connect-timeout must be more than 0".into());
        }
        if !(a.phases.load || a.phases.run || a.phases.verify) {
            return Err("--phases is empty".into());
        }
        if a.phases.verify && !(a.phases.load || a.phases.run) {
            return Err(
                "--phases verify checks what this invocation wrote: combine it with load and/or run"
                    .into(),
            );
        }
        if a.key_prefix.is_empty() {
            return Err("--key-prefix must not be empty".into());
        }
        if a.key_prefix.len() > MAX_PREFIX_BYTES {
            return Err(format!(
                "--key-prefix must be at most {MAX_PREFIX_BYTES} bytes"
            ));
        }
        if a.threads == Some(0) {
            return Err("--threads must be at least 1".into());
        }
        Ok(Settings {
            nodes,
            clients: a.clients,
            keys: a.keys,
            distribution: a.distribution,
            zipf_theta: a.zipf_theta,
            value_size: a.value_size,
            workload,
            mix,
            read_consistency: a.read_consistency,
            write_consistency: a.write_consistency,
            duration: a.duration,
            ops: a.ops,
            rate: a.rate,
            seed: a.seed,
            phases: a.phases,
            json: a.json,
            timeout: a.timeout,
            connect_timeout: a.connect_timeout,
            max_reconnects: a.max_reconnects,
            key_prefix: a.key_prefix,
            threads: a.threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Settings, CliError> {
        let mut v = vec!["ringkv-bench"];
        v.extend_from_slice(extra);
        Settings::parse_from(v)
    }

    fn invalid(extra: &[&str]) -> String {
        match parse(extra) {
            Err(CliError::Invalid(msg)) => msg,
            Err(CliError::Clap(e)) => panic!("clap error instead of a check: {e}"),
            Ok(s) => panic!("accepted: {s:?}"),
        }
    }

    fn clap_error(extra: &[&str]) -> String {
        match parse(extra) {
            Err(CliError::Clap(e)) => e.to_string(),
            Err(CliError::Invalid(msg)) => panic!("check error instead of clap: {msg}"),
            Ok(s) => panic!("accepted: {s:?}"),
        }
    }

    #[test]
    fn defaults() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.nodes.len(), 1);
        assert_eq!(s.clients, 64);
        assert_eq!(s.keys, 100_000);
        assert_eq!(s.value_size, 1024);
        assert_eq!(s.workload, "default");
        assert!((s.mix.read - 10.0 / 11.0).abs() < 1e-12);
        assert_eq!(s.duration, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert!(s.phases.load && s.phases.run && !s.phases.verify);
        assert_eq!(s.read_consistency.param(), None);
    }

    #[test]
    fn full_command_line() {
        let s = parse(&[
            "--nodes",
            "127.0.0.1:7101,127.0.0.1:7102",
            "--clients",
            "8",
            "--keys",
            "1000",
            "--distribution",
            "zipfian",
            "--zipf-theta",
            "0.8",
            "--workload",
            "write-only",
            "--delete-ratio",
            "0.1",
            "--read-consistency",
            "quorum",
            "--write-consistency",
            "all",
            "--duration",
            "2s",
            "--ops",
            "500",
            "--rate",
            "1000",
            "--phases",
            "verify,load,run",
            "--timeout",
            "250ms",
        ])
        .unwrap();
        assert_eq!(s.nodes.len(), 2);
        assert_eq!(s.distribution, DistKind::Zipfian);
        assert_eq!(s.mix.read, 0.0);
        assert!((s.mix.write() - 0.9).abs() < 1e-12);
        assert_eq!(s.read_consistency.param(), Some("quorum"));
        assert_eq!(s.write_consistency.param(), Some("all"));
        assert_eq!(s.ops, Some(500));
        assert_eq!(s.rate, Some(1000.0));
        assert_eq!(s.phases.names(), ["load", "run", "verify"]);
        assert_eq!(s.timeout, Duration::from_millis(250));
        let s = parse(&["--read-ratio", "0.25"]).unwrap();
        assert_eq!(s.workload, "custom");
        assert_eq!(s.mix.read, 0.25);
    }

    #[test]
    fn argument_errors_are_explained() {
        assert!(invalid(&["--nodes", "127.0.0.1"]).contains("no port"));
        assert!(invalid(&["--nodes", "127.0.0.1:7101,,127.0.0.1:7102"]).contains("empty"));
        assert!(invalid(&["--nodes", "127.0.0.1:7101,127.0.0.1:7101"]).contains("twice"));
        assert!(invalid(&["--nodes", "127.0.0.1:notaport"]).contains("invalid port"));
        assert!(invalid(&["--clients", "0"]).contains("--clients must be at least 1"));
        assert!(invalid(&["--keys", "0"]).contains("--keys"));
        assert!(invalid(&["--zipf-theta", "1.0"]).contains("--zipf-theta"));
        assert!(invalid(&["--value-size", "10"]).contains("--value-size"));
        assert!(invalid(&["--read-ratio", "1.5"]).contains("--read-ratio"));
        assert!(invalid(&["--workload", "c", "--delete-ratio", "0.1"]).contains("exceed 1"));
        assert!(invalid(&["--duration", "0s"]).contains("--duration"));
        assert!(invalid(&["--ops", "0"]).contains("--ops"));
        assert!(invalid(&["--rate", "0"]).contains("--rate"));
        assert!(invalid(&["--rate=-5"]).contains("--rate"));
        assert!(invalid(&["--phases", "verify"]).contains("combine"));
        assert!(invalid(&["--key-prefix", ""]).contains("--key-prefix"));
    }

    #[test]
    fn clap_level_errors() {
        assert!(clap_error(&["--clients=-3"]).contains("--clients"));
        assert!(clap_error(&["--clients", "many"]).contains("invalid digit"));
        assert!(clap_error(&["--workload", "z"]).contains("possible values"));
        assert!(clap_error(&["--distribution", "pareto"]).contains("possible values"));
        assert!(clap_error(&["--read-consistency", "two"]).contains("possible values"));
        assert!(clap_error(&["--workload", "a", "--read-ratio", "0.5"]).contains("cannot be used"));
        assert!(clap_error(&["--phases", "load,bogus"]).contains("unknown phase 'bogus'"));
        assert!(clap_error(&["--phases", "run,run"]).contains("twice"));
        assert!(clap_error(&["--duration", "10 parsecs"]).contains("unknown unit"));
        assert!(clap_error(&["--duration", "soon"]).contains("not a duration"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1.2.3s").is_err());
    }
}

//! The history of a run: one record per client operation, written as JSON
//! lines as operations complete, so a failed run can be inspected and the
//! checkers read the same file a person would.
//!
//! Times are milliseconds on one monotonic clock shared by every client of
//! the run (`invoke_ms` when the request was sent, `complete_ms` when its
//! answer, or its failure, was known).

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Put,
    Get,
    Delete,
}

/// What a client knows of an operation's effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged (a write) or answered (a read).
    Ok,
    /// Certainly not applied.
    Fail,
    /// May or may not have been applied (a timeout, a lost connection, a
    /// 503 marked `indeterminate`).
    Indeterminate,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Op {
    pub client: u32,
    pub kind: Kind,
    pub key: String,
    /// The unique value written (puts), or the value read (`None`: absent).
    pub value: Option<String>,
    /// Bytes of the value written.
    pub len: usize,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub outcome: Outcome,
    /// HTTP status, or 0 when no answer came.
    pub status: u16,
    pub consistency: String,
    pub coordinator: String,
    /// The error code or transport error, for failures.
    #[serde(default)]
    pub error: String,
}

/// Appends operations to a file; shared by the client threads.
pub struct Recorder {
    out: Mutex<BufWriter<File>>,
    epoch: Instant,
}

impl Recorder {
    pub fn create(path: &Path) -> Result<Recorder, String> {
        let f = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Recorder {
            out: Mutex::new(BufWriter::new(f)),
            epoch: Instant::now(),
        })
    }

    /// Milliseconds since the run began.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn elapsed(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub fn record(&self, op: &Op) {
        let line = serde_json::to_string(op).expect("an op serializes");
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{line}");
    }

    pub fn flush(&self) {
        let _ = self.out.lock().unwrap_or_else(|p| p.into_inner()).flush();
    }
}

/// Reads a history file.
pub fn read(path: &Path) -> Result<Vec<Op>, String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    BufReader::new(f)
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let line = line.map_err(|e| e.to_string())?;
            serde_json::from_str(&line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

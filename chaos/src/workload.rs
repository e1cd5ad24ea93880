//! The clients: threads in the client namespace, each sending one request
//! at a time to a random node and recording every operation in the history.
//!
//! * **set**: unique keys, each written once at `quorum`, values from 100
//!   bytes to the size limit (a few near it, so hints and anti-entropy move
//!   large records while the nemesis kills and cuts nodes);
//! * **register**: a few keys overwritten again and again with unique values
//!   and read at `quorum`;
//! * **delete**: unique keys written, then deleted, never rewritten, and
//!   read back now and then.
//!
//! How an answer maps to an outcome ([`classify`]): a 2xx is `ok`; an error
//! whose JSON says `"outcome": "not_applied"`, or a refusal that changes
//! nothing (400, 412, 413, 507, 503 `overloaded`/`clock_skew`) is `fail`;
//! anything else — a timeout, a reset, a 503 `indeterminate`, a 5xx — is
//! `indeterminate`.

use crate::history::{Kind, Op, Outcome, Recorder};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The value limit of the cluster (`storage.max_value_bytes`).
pub const VALUE_LIMIT: usize = 1 << 20;
/// Register keys.
pub const REGISTERS: usize = 4;
/// Pause between a client's operations.
const THINK: Duration = Duration::from_millis(10);

/// Which workloads the clients run, by weight.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub set: u32,
    pub register: u32,
    pub delete: u32,
}

/// What every client shares.
pub struct Shared {
    pub recorder: Recorder,
    pub nodes: Vec<SocketAddrV4>,
    pub stop: AtomicBool,
    pub mix: Mix,
}

/// A small deterministic generator (xorshift64*), one per client.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A value of `len` bytes whose text begins with its unique id.
pub fn value(id: &str, len: usize) -> Vec<u8> {
    let mut v = format!("{id}:").into_bytes();
    v.resize(len.max(v.len()), b'v');
    v
}

/// The unique id at the front of a value read back.
pub fn id_of(body: &[u8]) -> String {
    let end = body.iter().position(|b| *b == b':').unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

fn value_len(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=79 => 100 + rng.below(4000) as usize,
        80..=94 => 4096 + rng.below(60 << 10) as usize,
        _ => VALUE_LIMIT - rng.below(512 << 10) as usize,
    }
}

/// Maps an HTTP result to an outcome, status and error text. `resendable`:
/// the request has no body and an idempotent method (GET, DELETE), which
/// ureq sends again on a new connection when a pooled one was reset — so a
/// failure to connect then does not prove nothing was sent.
pub fn classify(
    result: Result<ureq::Response, ureq::Error>,
    resendable: bool,
) -> (Outcome, u16, Option<Vec<u8>>, String) {
    match result {
        Ok(r) => {
            let status = r.status();
            let mut body = Vec::new();
            let read = std::io::Read::read_to_end(&mut r.into_reader(), &mut body);
            match read {
                Ok(_) => (Outcome::Ok, status, Some(body), String::new()),
                Err(e) => (Outcome::Indeterminate, status, None, e.to_string()),
            }
        }
        Err(ureq::Error::Status(status, r)) => {
            let text = r.into_string().unwrap_or_default();
            let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let code = json["code"].as_str().unwrap_or("").to_string();
            let outcome = match json["outcome"].as_str() {
                Some("not_applied") => Outcome::Fail,
                Some("indeterminate") => Outcome::Indeterminate,
                _ if matches!(status, 400 | 404 | 412 | 413 | 507) => Outcome::Fail,
                _ if status == 503 && matches!(code.as_str(), "overloaded" | "clock_skew") => {
                    Outcome::Fail
                }
                _ => Outcome::Indeterminate,
            };
            (outcome, status, Some(text.into_bytes()), code)
        }
        Err(ureq::Error::Transport(t)) => {
            // Refused before anything was sent: certainly not applied.
            let outcome = if t.kind() == ureq::ErrorKind::ConnectionFailed && !resendable {
                Outcome::Fail
            } else {
                Outcome::Indeterminate
            };
            (outcome, 0, None, t.to_string())
        }
    }
}

/// One client: runs operations until told to stop.
pub fn client(id: u32, seed: u64, shared: Arc<Shared>) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .redirects(0)
        .build();
    // DELETEs go on fresh connections: on a pooled one that was reset, ureq
    // would send them again, and an answer to the second copy would then
    // hide that the first may have been applied.
    let once = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .redirects(0)
        .max_idle_connections(0)
        .build();
    let mut rng = Rng::new(seed ^ (u64::from(id) << 32));
    let mut n = 0u64;
    let mut deleted: Vec<String> = Vec::new();
    let total = shared.mix.set + shared.mix.register + shared.mix.delete;
    while !shared.stop.load(Ordering::Relaxed) {
        n += 1;
        let node = shared.nodes[rng.below(shared.nodes.len() as u64) as usize];
        let pick = rng.below(u64::from(total)) as u32;
        let ctx = Ctx {
            agent: &agent,
            once: &once,
            shared: &shared,
            client: id,
            node,
        };
        if pick < shared.mix.set {
            let key = format!("s{id}-{n}");
            let len = value_len(&mut rng);
            ctx.put(&key, &key, len);
        } else if pick < shared.mix.set + shared.mix.register {
            let key = format!("r{}", rng.below(REGISTERS as u64));
            if rng.below(2) == 0 {
                ctx.put(&key, &format!("c{id}-{n}"), 16);
            } else {
                ctx.get(&key);
            }
        } else if !deleted.is_empty() && rng.below(3) == 0 {
            let key = deleted[rng.below(deleted.len() as u64) as usize].clone();
            ctx.get(&key);
        } else {
            let key = format!("d{id}-{n}");
            if ctx.put(&key, &key, 64) == Outcome::Ok {
                std::thread::sleep(THINK);
                if ctx.delete(&key) == Outcome::Ok {
                    deleted.push(key);
                }
            }
        }
        std::thread::sleep(THINK);
    }
}

struct Ctx<'a> {
    agent: &'a ureq::Agent,
    /// Without pooled connections (see [`client`]).
    once: &'a ureq::Agent,
    shared: &'a Shared,
    client: u32,
    node: SocketAddrV4,
}

impl Ctx<'_> {
    fn url(&self, key: &str) -> String {
        format!("http://{}/v1/kv/{key}?consistency=quorum", self.node)
    }

    fn record(
        &self,
        kind: Kind,
        key: &str,
        value: Option<String>,
        len: usize,
        invoke: u64,
        r: (Outcome, u16, String),
    ) {
        self.shared.recorder.record(&Op {
            client: self.client,
            kind,
            key: key.to_string(),
            value,
            len,
            invoke_ms: invoke,
            complete_ms: self.shared.recorder.now_ms(),
            outcome: r.0,
            status: r.1,
            consistency: "quorum".into(),
            coordinator: self.node.ip().to_string(),
            error: r.2,
        });
    }

    fn put(&self, key: &str, id: &str, len: usize) -> Outcome {
        let invoke = self.shared.recorder.now_ms();
        let body = value(id, len);
        let (outcome, status, _, error) =
            classify(self.agent.put(&self.url(key)).send_bytes(&body), false);
        self.record(
            Kind::Put,
            key,
            Some(id.to_string()),
            body.len(),
            invoke,
            (outcome, status, error),
        );
        outcome
    }

    fn delete(&self, key: &str) -> Outcome {
        let invoke = self.shared.recorder.now_ms();
        let (outcome, status, _, error) = classify(self.once.delete(&self.url(key)).call(), false);
        self.record(Kind::Delete, key, None, 0, invoke, (outcome, status, error));
        outcome
    }

    fn get(&self, key: &str) {
        let invoke = self.shared.recorder.now_ms();
        let (outcome, status, body, error) = classify(self.agent.get(&self.url(key)).call(), true);
        let (outcome, value) = match (outcome, status) {
            (Outcome::Ok, 200) => (Outcome::Ok, body.map(|b| id_of(&b))),
            // Only the store's own "not found" says absent (not, say, a
            // router's 404).
            (_, 404) if error == "not_found" => (Outcome::Ok, None),
            // A read that failed tells nothing.
            _ => (Outcome::Fail, None),
        };
        self.record(Kind::Get, key, value, 0, invoke, (outcome, status, error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review of 06: ureq sends a DELETE again on a new connection when a
    /// pooled one was reset after sending it; if that reconnect is refused
    /// the first may still have applied, so the outcome is indeterminate.
    /// A PUT (with a body, never resent) refused at connect was not sent.
    #[test]
    fn a_refused_connection_proves_nothing_for_resendable_requests() {
        // Nothing listens on port 1 of loopback.
        let refused = ureq::delete("http://127.0.0.1:1/v1/kv/k").call();
        let (outcome, ..) = classify(refused, true);
        assert_eq!(outcome, Outcome::Indeterminate);
        let put = ureq::put("http://127.0.0.1:1/v1/kv/k").send_bytes(b"v");
        let (outcome, ..) = classify(put, false);
        assert_eq!(outcome, Outcome::Fail);
    }
}

//! Executing one operation: building the request, sending it on the client's
//! connection, recording the outcome in the ledger and the phase statistics.

use crate::conn::{CallError, Client, Reply};
use crate::ctx::Ctx;
use crate::ledger::Change;
use crate::stats::{ErrorKind, PhaseStats};
use crate::value;
use crate::workload::OpKind;
use bytes::Bytes;
use hyper::Method;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// How an operation ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A read answered 404.
    Miss,
    Failed,
    /// The client's connection is gone for good: the client must stop.
    GaveUp(String),
}

/// Longest error body kept as a sample.
const SAMPLE_BYTES: usize = 200;

fn body_sample(reply: &Reply) -> String {
    let text = String::from_utf8_lossy(&reply.body[..reply.body.len().min(SAMPLE_BYTES)]);
    if text.is_empty() {
        "(empty body)".into()
    } else {
        text.into_owned()
    }
}

/// Performs `op` on key `key`. Latency counts from `intended` (the scheduled
/// start in open-loop mode, the actual start otherwise).
pub async fn execute(
    ctx: &Ctx,
    client: &mut Client,
    stats: &mut PhaseStats,
    op: OpKind,
    key: u64,
    intended: Instant,
) -> Outcome {
    let s = &ctx.settings;
    let level = match op {
        OpKind::Read => s.read_consistency,
        OpKind::Write | OpKind::Delete => s.write_consistency,
    };
    let path = ctx.keyspace.path(key, level.param());
    let (method, body, seq) = match op {
        OpKind::Read => (Method::GET, Bytes::new(), None),
        OpKind::Write => {
            let seq = ctx.ledger.with(key, |k| k.begin(Change::Put));
            let body = value::encode(ctx.run_id, key as u32, seq, s.value_size);
            (Method::PUT, body, Some(seq))
        }
        OpKind::Delete => {
            let seq = ctx.ledger.with(key, |k| k.begin(Change::Delete));
            (Method::DELETE, Bytes::new(), Some(seq))
        }
    };
    let result = client.call(method, &path, body, s.timeout).await;
    let latency = intended.elapsed();
    let st = stats.op(op);
    let outcome = match result {
        Ok(reply) => match (op, reply.status) {
            (OpKind::Read, 200) => Outcome::Ok,
            (OpKind::Read, 404) => Outcome::Miss,
            (OpKind::Write | OpKind::Delete, 200 | 201 | 204) => {
                let seq = seq.expect("writes have a seq");
                ctx.ledger.with(key, |k| k.ack(seq));
                Outcome::Ok
            }
            (_, status) => {
                st.record_error_detail(ErrorKind::Status(status), || body_sample(&reply));
                Outcome::Failed
            }
        },
        Err(CallError::Timeout) => {
            st.record_error(ErrorKind::Timeout);
            Outcome::Failed
        }
        Err(CallError::Connection(e)) => {
            st.record_error_detail(ErrorKind::Connection, || e);
            Outcome::Failed
        }
        Err(CallError::GaveUp(e)) => {
            st.record_error_detail(ErrorKind::Connection, || e.clone());
            Outcome::GaveUp(e)
        }
    };
    match outcome {
        Outcome::Ok => {
            st.ok += 1;
            st.record_latency(latency);
        }
        Outcome::Miss => {
            st.misses += 1;
            st.record_latency(latency);
        }
        Outcome::Failed | Outcome::GaveUp(_) => {
            ctx.live.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    ctx.live.done.fetch_add(1, Ordering::Relaxed);
    outcome
}

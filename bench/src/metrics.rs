//! Server counters from `GET /metrics` (Prometheus text), to relate fsyncs
//! (commits) to acknowledged writes. Nodes without the endpoint are reported
//! as such, never guessed.

use crate::conn::{connect, request, Node};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use std::time::Duration;

pub const COMMITS: &str = "ringkv_commits_total";
pub const WRITES: &str = "ringkv_writes_total";

/// The counters this bench uses, summed over label sets (and over nodes).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    pub commits: Option<f64>,
    pub writes: Option<f64>,
}

/// Sum of every sample of metric `name` (any labels) in a Prometheus text
/// exposition; `None` if there is none.
pub fn sample_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // The name must end here: next is labels or whitespace.
        let rest = if let Some(labels) = rest.strip_prefix('{') {
            match labels.find('}') {
                Some(end) => &labels[end + 1..],
                None => continue,
            }
        } else if rest.starts_with([' ', '\t']) {
            rest
        } else {
            continue;
        };
        // Value, optionally followed by a timestamp.
        if let Some(v) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

pub fn parse(text: &str) -> Counters {
    Counters {
        commits: sample_sum(text, COMMITS),
        writes: sample_sum(text, WRITES),
    }
}

/// Scrapes one node. `Err` explains why there is nothing to use.
pub async fn scrape(node: &Node, timeout: Duration) -> Result<Counters, String> {
    let work = async {
        let mut sender = connect(node, timeout)
            .await
            .map_err(|e| format!("could not read /metrics: {e}"))?;
        let req = request(node, Method::GET, "/metrics", Bytes::new())?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("could not read /metrics on {node}: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("could not read /metrics on {node}: {e}"))?
            .to_bytes();
        if status.as_u16() != 200 {
            return Err(format!(
                "node has no /metrics: {node} answered {} to GET /metrics",
                status.as_u16()
            ));
        }
        Ok(parse(&String::from_utf8_lossy(&body)))
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(format!("could not read /metrics on {node}: timed out")))
}

/// Scrapes every node (in order); `Err` if any node has no usable endpoint.
pub async fn scrape_all(nodes: &[Node], timeout: Duration) -> Result<Vec<Counters>, String> {
    let mut all = Vec::with_capacity(nodes.len());
    for node in nodes {
        all.push(scrape(node, timeout).await?);
    }
    Ok(all)
}

/// Sum over nodes of the per-node increase of one counter: `Ok(None)` if a
/// node lacks it, `Err` if it went down on a node (the node restarted).
fn delta_sum(
    before: &[Counters],
    after: &[Counters],
    get: fn(&Counters) -> Option<f64>,
) -> Result<Option<f64>, String> {
    let mut sum = 0.0;
    for (b, a) in before.iter().zip(after) {
        let (Some(b), Some(a)) = (get(b), get(a)) else {
            return Ok(None);
        };
        if a < b {
            return Err("a counter went down: a node restarted during the run".into());
        }
        sum += a - b;
    }
    Ok(Some(sum))
}

/// Commits per acknowledged write over a run, from counters before and after.
#[derive(Clone, Debug, PartialEq)]
pub struct FsyncReport {
    /// `None` with the reason when it cannot be computed.
    pub commits_per_acked_write: Result<f64, String>,
    pub commits_delta: Option<f64>,
    pub writes_delta: Option<f64>,
    pub acked_writes: u64,
}

pub fn fsync_report(
    before: &Result<Vec<Counters>, String>,
    after: &Result<Vec<Counters>, String>,
    acked_writes: u64,
) -> FsyncReport {
    let unavailable = |why: String| FsyncReport {
        commits_per_acked_write: Err(why),
        commits_delta: None,
        writes_delta: None,
        acked_writes,
    };
    let (b, a) = match (before, after) {
        (Ok(b), Ok(a)) => (b, a),
        (Err(e), _) | (_, Err(e)) => return unavailable(e.clone()),
    };
    let (commits_delta, writes_delta) = match (
        delta_sum(b, a, |c| c.commits),
        delta_sum(b, a, |c| c.writes),
    ) {
        (Ok(c), Ok(w)) => (c, w),
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    let commits_per_acked_write = match commits_delta {
        None => Err(format!("node has no /metrics counter {COMMITS}")),
        Some(_) if acked_writes == 0 => Err("no write was acknowledged".into()),
        Some(c) => Ok(c / acked_writes as f64),
    };
    FsyncReport {
        commits_per_acked_write,
        commits_delta,
        writes_delta,
        acked_writes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP ringkv_commits_total Durable commits (fsyncs).
# TYPE ringkv_commits_total counter
ringkv_commits_total 120
ringkv_commits_total_created 1700000000
ringkv_writes_total{node=\"n1\"} 1000
ringkv_writes_total{node=\"n2\",kind=\"x\"} 500 1700000000000
ringkv_writes_totally_other 9
";

    #[test]
    fn sums_samples_of_exactly_the_named_metric() {
        assert_eq!(sample_sum(TEXT, COMMITS), Some(120.0));
        assert_eq!(sample_sum(TEXT, WRITES), Some(1500.0));
        assert_eq!(sample_sum(TEXT, "ringkv_missing"), None);
        assert_eq!(
            parse(TEXT),
            Counters {
                commits: Some(120.0),
                writes: Some(1500.0)
            }
        );
    }

    fn c(commits: f64, writes: f64) -> Counters {
        Counters {
            commits: Some(commits),
            writes: Some(writes),
        }
    }

    #[test]
    fn fsyncs_per_write_from_deltas() {
        let b = Ok(vec![c(100.0, 1000.0), c(0.0, 0.0)]);
        let a = Ok(vec![c(300.0, 3000.0), c(50.0, 1000.0)]);
        let r = fsync_report(&b, &a, 1000);
        assert_eq!(r.commits_per_acked_write, Ok(0.25));
        assert_eq!(r.commits_delta, Some(250.0));
        assert_eq!(r.writes_delta, Some(3000.0));
        let none = fsync_report(
            &Err("node has no /metrics: 127.0.0.1:7101 answered 404 to GET /metrics".into()),
            &a,
            10,
        );
        assert!(none
            .commits_per_acked_write
            .unwrap_err()
            .contains("no /metrics"));
        let no_counter = fsync_report(
            &Ok(vec![Counters::default()]),
            &Ok(vec![Counters::default()]),
            10,
        );
        assert!(no_counter.commits_per_acked_write.is_err());
        // A node restarted: its counters start over; no made-up number.
        let restarted = fsync_report(&Ok(vec![c(500.0, 900.0)]), &Ok(vec![c(20.0, 40.0)]), 10);
        assert!(restarted
            .commits_per_acked_write
            .unwrap_err()
            .contains("restarted"));
    }
}

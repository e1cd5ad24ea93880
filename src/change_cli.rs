//! `ringkv admin join|leave|remove|replace|skip` (a membership change,
//! proposed through the node asked: `POST /v1/admin/layout/{op}`) and
//! `ringkv transfers` (what a node pulls for the change in flight).

use crate::client::{Conn, Session};
use serde_json::Value;
use std::fmt::Write;
use std::process::ExitCode;

/// One change: `op` of `node` (`with`: the new node of a replace).
pub fn change(conn: &Conn, op: &str, node: &str, with: Option<&str>, force: bool) -> ExitCode {
    let session = match Session::open(conn) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let url = format!("{}/v1/admin/layout/{op}", session.base);
    let mut req = session.request("POST", &url).query("node", node);
    if let Some(new) = with {
        req = req.query("with", new);
    }
    if force {
        req = req.query("force", "true");
    }
    let body = match req.call() {
        Ok(resp) => resp.into_string().unwrap_or_default(),
        Err(e) => return session.failed(e),
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    print!("{}", render_change(op, node, &v));
    if v.get("skip_error").is_some() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The operator's summary of a change's answer.
pub fn render_change(op: &str, node: &str, v: &Value) -> String {
    let mut out = String::new();
    if let Some(version) = v.get("version").and_then(Value::as_u64) {
        let moved = v["moved_partitions"].as_u64().unwrap_or(0);
        let total = v["partitions"].as_u64().unwrap_or(0);
        let members: Vec<&str> = v["members"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{op} {node}: layout version {version} agreed; members {}; {moved} of {total} \
             partitions change replicas",
            members.join(", ")
        );
        let _ = writeln!(
            out,
            "data moves now: follow it with `ringkv transfers` and `ringkv admin layout history`"
        );
    } else {
        let _ = writeln!(out, "{op} {node}: done");
    }
    for w in v["warnings"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "warning (forced): {}", w.as_str().unwrap_or_default());
    }
    if let Some(risk) = v["at_risk"].as_array() {
        let at_one = risk
            .iter()
            .filter(|r| r["writes_at_one_may_be_lost"] == true)
            .count();
        let at_quorum = risk
            .iter()
            .filter(|r| r["writes_at_quorum_may_be_lost"] == true)
            .count();
        let _ = writeln!(
            out,
            "skipped: {} partitions lose a replica; writes acknowledged at `one` may be lost in \
             {at_one}, at `quorum` in {at_quorum}",
            risk.len()
        );
    }
    if let Some(e) = v["skip_error"].as_str() {
        let _ = writeln!(out, "error: {e}");
    }
    out
}

pub fn transfers(conn: &Conn, json: bool) -> ExitCode {
    let session = match Session::open(conn) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let body = match session.get_json("/v1/admin/transfers") {
        Ok(b) => b,
        Err(code) => return code,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
    } else {
        print!("{}", render_transfers(&body));
    }
    ExitCode::SUCCESS
}

/// One line per partition pulled, then what holds any of them back.
pub fn render_transfers(v: &Value) -> String {
    let mut out = String::new();
    let node = v["node"].as_str().unwrap_or("?");
    let list = v["transfers"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        let _ = writeln!(
            out,
            "{node}: no transfers (nothing to pull for a change in flight)"
        );
    } else {
        let done = list.iter().filter(|t| t["state"] == "done").count();
        let _ = writeln!(
            out,
            "{node}: {done} of {} partitions pulled ({:.0}% done)",
            list.len(),
            100.0 * done as f64 / list.len() as f64
        );
        let _ = writeln!(
            out,
            "{:<8} {:>9} {:<9} {:>8} {:>10} {:>8}  from",
            "version", "partition", "state", "keys", "bytes", "keys/s"
        );
        for t in &list {
            let keys = t["keys"].as_u64().unwrap_or(0);
            let secs = match (t["started_ms"].as_u64(), t["finished_ms"].as_u64()) {
                (Some(a), Some(b)) if b > a => (b - a) as f64 / 1000.0,
                _ => 0.0,
            };
            let rate = if secs > 0.0 { keys as f64 / secs } else { 0.0 };
            let sources: Vec<&str> = t["sources"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<8} {:>9} {:<9} {:>8} {:>10} {:>8.0}  {}",
                t["version"].as_u64().unwrap_or(0),
                t["partition"].as_u64().unwrap_or(0),
                t["state"].as_str().unwrap_or("?"),
                keys,
                t["bytes"].as_u64().unwrap_or(0),
                rate,
                sources.join(",")
            );
            if let Some(e) = t["error"].as_str() {
                let _ = writeln!(out, "         waiting: {e}");
            }
        }
    }
    if let Some(e) = v["last_error"].as_str() {
        let _ = writeln!(out, "last report failed: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_change_answer_names_the_version_the_move_and_the_risk() {
        let v = json!({
            "version": 2, "members": ["n1", "n2", "n4"], "moved_partitions": 64,
            "partitions": 256, "warnings": [],
            "at_risk": [{"partition": 1, "writes_at_one_may_be_lost": true,
                         "writes_at_quorum_may_be_lost": false}],
        });
        let text = render_change("remove", "n3", &v);
        assert!(text.contains("layout version 2 agreed"), "{text}");
        assert!(text.contains("64 of 256"), "{text}");
        assert!(
            text.contains("at `one` may be lost in 1, at `quorum` in 0"),
            "{text}"
        );
    }

    #[test]
    fn transfers_show_progress_and_why_one_waits() {
        let v = json!({"node": "n4", "last_error": null, "transfers": [
            {"version": 2, "partition": 3, "state": "done", "keys": 100, "bytes": 1000,
             "sources": ["n1", "n2"], "started_ms": 1000, "finished_ms": 3000, "error": null},
            {"version": 2, "partition": 9, "state": "retrying", "keys": 0, "bytes": 0,
             "sources": ["n3"], "error": "from n3: not connected"},
        ]});
        let text = render_transfers(&v);
        assert!(
            text.contains("1 of 2 partitions pulled (50% done)"),
            "{text}"
        );
        assert!(text.contains("waiting: from n3: not connected"), "{text}");
        assert!(text.contains("50"), "keys/s: {text}");
    }
}

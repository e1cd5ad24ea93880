//! `ringkv status`: the cluster as one node sees it, like `nodetool
//! status` — per node its state (U/D for up/down, then N normal, J joining,
//! L leaving, S standby), address, share of the data now and after the
//! change in flight, partitions held, incoming and outgoing, pending hints
//! and when it was last heard from — then a line of remediation for
//! whatever holds a change back. Built from `GET /v1/cluster` and
//! `GET /v1/admin/layout`.

use crate::client::{Conn, Session};
use serde_json::{json, Value};
use std::fmt::Write;
use std::process::ExitCode;

pub fn status(conn: &Conn, json_out: bool) -> ExitCode {
    let session = match Session::open(conn) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let cluster = match session.get_json("/v1/cluster") {
        Ok(b) => b,
        Err(code) => return code,
    };
    // Without metadata the table still shows the members.
    let layout = session.get_json("/v1/admin/layout").unwrap_or(Value::Null);
    if json_out {
        let body = json!({ "cluster": cluster, "layout": layout });
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
    } else {
        print!("{}", render(&cluster, &layout));
    }
    ExitCode::SUCCESS
}

fn share_of(version: Option<&Value>, id: &str) -> Option<(f64, u64)> {
    version?["members"].as_array()?.iter().find_map(|m| {
        (m["id"] == id).then(|| {
            (
                m["share"].as_f64().unwrap_or(0.0),
                m["partitions"].as_u64().unwrap_or(0),
            )
        })
    })
}

/// The table and the remediation lines.
pub fn render(cluster: &Value, layout: &Value) -> String {
    let mut out = String::new();
    let versions = layout["versions"].as_array().cloned().unwrap_or_default();
    let read_v = layout["read_version"].as_u64();
    let read = versions.iter().find(|v| v["version"].as_u64() == read_v);
    let newest = versions.last();
    let newest_v = newest.and_then(|v| v["version"].as_u64());
    match (read_v, newest_v) {
        (Some(r), Some(n)) if r != n => {
            let _ = writeln!(
                out,
                "layout: version {n} in progress (reads use version {r})"
            );
        }
        (_, Some(n)) => {
            let _ = writeln!(out, "layout: version {n}");
        }
        _ => {
            let _ = writeln!(
                out,
                "layout: unknown (metadata is not running on this node)"
            );
        }
    }
    let _ = writeln!(
        out,
        "{:<3} {:<8} {:<22} {:>17} {:>5} {:>4} {:>4} {:>6}  last seen",
        "--", "node", "address", "owns now → after", "held", "in", "out", "hints"
    );
    let moves = |id: &str| -> (u64, u64) {
        layout["moves"]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["id"] == id))
            .map(|m| {
                (
                    m["incoming"].as_u64().unwrap_or(0),
                    m["outgoing"].as_u64().unwrap_or(0),
                )
            })
            .unwrap_or((0, 0))
    };
    let mut notes = Vec::new();
    let members = cluster["members"].as_array().cloned().unwrap_or_default();
    for m in &members {
        let id = m["id"].as_str().unwrap_or("?");
        let up = m["self"] == true || m["status"] == "up";
        let now = share_of(read, id);
        let after = share_of(newest, id);
        let role = match (now.is_some(), after.is_some()) {
            (true, true) => 'N',
            (false, true) => 'J',
            (true, false) => 'L',
            (false, false) => 'S',
        };
        let pct = |s: Option<(f64, u64)>| format!("{:.1}%", 100.0 * s.map_or(0.0, |s| s.0));
        let (incoming, outgoing) = moves(id);
        let seen = if m["self"] == true {
            "this node".to_string()
        } else {
            m["last_seen_ms_ago"]
                .as_u64()
                .map_or("never".into(), |ms| format!("{ms} ms ago"))
        };
        let _ = writeln!(
            out,
            "{:<3} {:<8} {:<22} {:>17} {:>5} {:>4} {:>4} {:>6}  {seen}",
            format!("{}{role}", if up { 'U' } else { 'D' }),
            id,
            m["http_addr"].as_str().unwrap_or("?"),
            format!("{} → {}", pct(now), pct(after)),
            now.map_or(0, |s| s.1),
            incoming,
            outgoing,
            m["pending_hints"].as_u64().unwrap_or(0),
        );
        if !up && role != 'S' && read_v != newest_v {
            notes.push(format!(
                "{id} is down and counts for the change in flight: restart it, or `ringkv admin \
                 remove {id}` (or `ringkv admin skip {id}`), which say what it alone held"
            ));
        }
    }
    if let Some(n) = newest_v.filter(|n| Some(*n) != read_v) {
        for p in layout["progress"].as_array().into_iter().flatten() {
            let id = p["node"].as_str().unwrap_or("?");
            if p["skipped"] == true {
                continue;
            }
            if p["ack"].as_u64() < Some(n) {
                notes.push(format!(
                    "waiting for {id} to fence version {n}: it still runs requests of an older \
                     version, or cannot reach the metadata leader (see its log)"
                ));
            } else if p["sync"].as_u64() < Some(n) {
                let addr = members
                    .iter()
                    .find(|m| m["id"] == id)
                    .and_then(|m| m["http_addr"].as_str())
                    .unwrap_or("?");
                notes.push(format!(
                    "{id} is pulling its partitions for version {n}: `ringkv transfers --node \
                     {addr}` shows each and what it waits on"
                ));
            }
        }
    }
    if layout.is_object() && layout["leader"].is_null() {
        notes.push(
            "no metadata leader: layout changes wait until a majority of the voters is up \
             (data is still served)"
                .into(),
        );
    }
    for n in notes {
        let _ = writeln!(out, "! {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A join in flight with a dead node: states, shares now → after,
    /// moves, and a remediation line per thing holding the change back.
    #[test]
    fn the_table_shows_states_shares_moves_and_what_is_stuck() {
        let cluster = json!({"members": [
            {"id": "n1", "self": true, "status": "up", "http_addr": "127.0.0.1:7101", "pending_hints": 0},
            {"id": "n2", "self": false, "status": "down", "http_addr": "127.0.0.1:7102",
             "pending_hints": 5, "last_seen_ms_ago": 9000},
            {"id": "n4", "self": false, "status": "up", "http_addr": "127.0.0.1:7104",
             "pending_hints": 0, "last_seen_ms_ago": 20},
            {"id": "n5", "self": false, "status": "up", "http_addr": "127.0.0.1:7105",
             "pending_hints": 0, "last_seen_ms_ago": 20},
        ]});
        let member =
            |id: &str, share: f64, p: u64| json!({"id": id, "share": share, "partitions": p});
        let layout = json!({
            "leader": "n1", "read_version": 1,
            "versions": [
                {"version": 1, "members": [member("n1", 1.0, 64), member("n2", 1.0, 64)]},
                {"version": 2, "members": [member("n1", 0.75, 48), member("n2", 0.75, 48),
                                           member("n4", 0.5, 32)]},
            ],
            "moves": [{"id": "n4", "incoming": 32, "outgoing": 0},
                      {"id": "n1", "incoming": 0, "outgoing": 16}],
            "progress": [{"node": "n1", "ack": 2, "sync": 2, "skipped": false},
                         {"node": "n2", "ack": 1, "sync": 1, "skipped": false},
                         {"node": "n4", "ack": 2, "sync": 1, "skipped": false}],
        });
        let text = render(&cluster, &layout);
        assert!(
            text.contains("version 2 in progress (reads use version 1)"),
            "{text}"
        );
        let line = |id: &str| {
            text.lines()
                .find(|l| l.split_whitespace().nth(1) == Some(id))
                .unwrap()
                .to_string()
        };
        assert!(
            line("n1").starts_with("UN") && line("n1").contains("100.0% → 75.0%"),
            "{text}"
        );
        assert!(
            line("n2").starts_with("DN") && line("n2").contains("9000 ms ago"),
            "{text}"
        );
        assert!(
            line("n4").starts_with("UJ") && line("n4").contains("0.0% → 50.0%"),
            "{text}"
        );
        assert!(line("n4").contains(" 32 "), "incoming: {text}");
        assert!(line("n5").starts_with("US"), "{text}");
        assert!(
            text.contains("n2 is down and counts for the change"),
            "{text}"
        );
        assert!(text.contains("waiting for n2 to fence version 2"), "{text}");
        assert!(text.contains("n4 is pulling its partitions"), "{text}");
        assert!(!text.contains("no metadata leader"), "{text}");
    }
}

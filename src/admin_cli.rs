//! `ringkv admin layout show|history`: the layout history agreed by
//! metadata consensus, as one node holds it (`GET /v1/admin/layout`), as a
//! table or (`-o json`) as the node's JSON answer.

use crate::client::{Conn, Session};
use ringkv_actors::meta::MetaStatus;
use serde::Deserialize;
use std::fmt::Write;
use std::process::ExitCode;

/// What to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutView {
    /// The newest agreed version: members, shares, consensus state.
    Show,
    /// Every live version, and each node's fence/sync/switch progress.
    History,
}

/// The node's answer.
#[derive(Debug, Deserialize)]
pub struct LayoutAnswer {
    #[serde(flatten)]
    pub status: MetaStatus,
    pub configured_fingerprint: String,
    pub matches_config: bool,
}

pub fn layout(conn: &Conn, view: LayoutView, json: bool) -> ExitCode {
    let session = match Session::open(conn) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let body = match session.get_json("/v1/admin/layout") {
        Ok(b) => b,
        Err(code) => return code,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    match serde_json::from_value::<LayoutAnswer>(body) {
        Ok(a) => {
            print!("{}", render(&a, view));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringkv: the node's answer is not a layout status: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The text of `view` for answer `a`.
pub fn render(a: &LayoutAnswer, view: LayoutView) -> String {
    let s = &a.status;
    let mut out = String::new();
    let leader = s
        .leader
        .as_deref()
        .unwrap_or("none (metadata changes are blocked)");
    let _ = writeln!(
        out,
        "metadata: {} is {} in term {}; leader {leader}; voters {}{}",
        s.node,
        s.role,
        s.term,
        s.voters.join(","),
        if s.learners.is_empty() {
            String::new()
        } else {
            format!("; learners {}", s.learners.join(","))
        }
    );
    let Some(newest) = s.versions.last() else {
        let _ = writeln!(out, "no layout version agreed yet");
        return out;
    };
    let shown = match view {
        LayoutView::Show => std::slice::from_ref(newest),
        LayoutView::History => &s.versions[..],
    };
    for v in shown {
        let _ = writeln!(
            out,
            "\nversion {} (fingerprint {}, {} partitions, N={}){}",
            v.version,
            v.fingerprint,
            v.partitions,
            v.replication_factor,
            if Some(v.version) == s.read_version {
                ", reads use it"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "  {:<16} {:>6} {:>8} {:>10}",
            "node", "weight", "owns", "partitions"
        );
        for m in &v.members {
            let _ = writeln!(
                out,
                "  {:<16} {:>6} {:>7.1}% {:>10}",
                m.id,
                m.weight,
                m.share * 100.0,
                m.partitions
            );
        }
    }
    if view == LayoutView::History {
        let _ = writeln!(
            out,
            "\nprogress (newest version reached: fence = writes to every live set, sync = holds \
             the data, switch = knows every node synced)"
        );
        let _ = writeln!(
            out,
            "  {:<16} {:>6} {:>6} {:>6}",
            "node", "fence", "sync", "switch"
        );
        for p in &s.progress {
            let _ = writeln!(
                out,
                "  {:<16} {:>6} {:>6} {:>6}{}",
                p.node,
                p.ack,
                p.sync,
                p.sync_ack,
                if p.skipped { "  (skipped)" } else { "" }
            );
        }
    }
    if !a.matches_config {
        let _ = writeln!(
            out,
            "\nnote: the data path serves the configured layout ({}), not version {}",
            a.configured_fingerprint, newest.version
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_actors::meta::status::{MemberShare, NodeProgress, VersionStatus};

    fn answer() -> LayoutAnswer {
        let version = |v: u64, members: &[&str]| VersionStatus {
            version: v,
            fingerprint: format!("{v:016x}"),
            partitions: 256,
            replication_factor: 3,
            members: members
                .iter()
                .map(|m| MemberShare {
                    id: m.to_string(),
                    weight: 100,
                    share: 1.0 / members.len() as f64,
                    partitions: 256 * 3 / members.len(),
                })
                .collect(),
        };
        LayoutAnswer {
            status: MetaStatus {
                node: "n1".into(),
                role: "follower".into(),
                term: 3,
                leader: None,
                error: None,
                last_applied: Some(9),
                snapshot: None,
                purged: None,
                voters: vec!["n1".into(), "n2".into(), "n3".into()],
                learners: vec![],
                versions: vec![
                    version(1, &["n1", "n2", "n3"]),
                    version(2, &["n1", "n2", "n3", "n4"]),
                ],
                read_version: Some(1),
                progress: vec![NodeProgress {
                    node: "n4".into(),
                    ack: 2,
                    sync: 1,
                    sync_ack: 1,
                    skipped: false,
                }],
                moves: vec![],
            },
            configured_fingerprint: "0000000000000001".into(),
            matches_config: false,
        }
    }

    /// `show` prints the newest version only, says that no leader blocks
    /// changes, and that the data path is not on the newest version.
    #[test]
    fn show_prints_the_newest_version_and_what_is_wrong() {
        let text = render(&answer(), LayoutView::Show);
        assert!(
            text.contains("version 2 ") && !text.contains("version 1 "),
            "{text}"
        );
        assert!(text.contains("n4") && text.contains("25.0%"), "{text}");
        assert!(
            text.contains("leader none (metadata changes are blocked)"),
            "{text}"
        );
        assert!(text.contains("not version 2"), "{text}");
    }

    /// `history` prints every live version, which one reads use, and each
    /// node's progress.
    #[test]
    fn history_prints_every_version_and_progress() {
        let text = render(&answer(), LayoutView::History);
        assert!(
            text.contains("version 1 ") && text.contains("version 2 "),
            "{text}"
        );
        assert!(text.contains("reads use it"), "{text}");
        let progress = &text[text.find("\nprogress").unwrap()..];
        let row = progress
            .lines()
            .find(|l| l.trim_start().starts_with("n4 "))
            .unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols, vec!["n4", "2", "1", "1"], "{text}");
    }
}

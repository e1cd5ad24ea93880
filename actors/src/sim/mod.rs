//! The simulated cluster: several real node assemblies in one process,
//! wired through an in-memory network with scripted partitions and held
//! frames ([`net`]), on a steppable clock ([`clock`]), driven by golden
//! scripts ([`script`]) in `sim/scripts/`. Protocol behaviour — quorums
//! under partitions, hints, repair, tombstone GC, restarts with a wrong
//! clock — is tested without sockets or processes. Each script replays a
//! scenario the fault suite found, and fails with that fix reverted:
//! * `quorum_under_partition`, `hint_only_write_outlives_hint_age`,
//! * `lagging_node_just_restarted` (reads answer clock_skew, not absent),
//! * `in_flight_gc_race` (GC waits out a hint still on its way),
//! * `late_frame_after_dropped_connection` (GC waits out a frame stuck in
//!   a connection; a connection given up on delivers nothing later).
//!
//! Protocol time moves when a script says (`advance`); deadlines and
//! timers are real, so a script waits for states (`stabilize`,
//! `wait_hints`, `wait_held`) rather than for amounts of time, and the
//! writer commits on its own schedule.

pub mod clock;
pub mod cluster;
pub mod net;
pub mod script;

#[cfg(test)]
mod tests {
    use super::script::{rewrite, run};
    use std::path::Path;

    /// An exchange wanted with a peer whose calls fail at once used to be
    /// retried only by a 2 s poll; woken by each want instead, a failing
    /// peer would be retried in a tight loop. Wanted passes start at most
    /// every `repair::WANTED_RETRY`.
    #[actix::test]
    async fn a_wanted_exchange_that_keeps_failing_is_retried_not_hammered() {
        use super::cluster::{Settings, SimCluster};
        use std::time::Duration;
        let c = SimCluster::start(Settings::default()).await;
        let started = std::time::Instant::now();
        while !c.settled() && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c.net.reset("n1", "n2");
        let n1 = c.node("n1");
        n1.core.local.repair_wanted.want("n2");
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        let passes = n1.repair.status.lock().unwrap().passes;
        assert!((2..=4).contains(&passes), "{passes} wanted passes in 4.5 s");
        assert!(n1.core.local.repair_wanted.contains("n2"), "still wanted");
    }

    /// Runs every script in `sim/scripts/` and compares what each command
    /// printed with the script's expected lines.
    #[actix::test]
    async fn golden_scripts() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sim/scripts");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "txt"))
            .collect();
        names.sort();
        assert!(!names.is_empty());
        let update = std::env::var_os("UPDATE_GOLDEN").is_some();
        let mut failures = Vec::new();
        for path in names {
            let script = std::fs::read_to_string(&path).unwrap();
            let printed = run(&script).await;
            let want = rewrite(&script, &printed);
            if update {
                std::fs::write(&path, &want).unwrap();
            } else if want != script {
                failures.push(format!(
                    "{}:\n--- expected\n{script}\n--- got\n{want}",
                    path.display()
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

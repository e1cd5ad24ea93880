//! The simulated cluster: several real node assemblies in one process,
//! wired through an in-memory network with scripted partitions
//! ([`net`]), driven by golden scripts ([`script`]) in `sim/scripts/`.
//! Protocol behaviour — quorums under partitions, hints, repair — is tested
//! in milliseconds per step without sockets or processes.
//!
//! Time is real (short deadlines and a 50 ms gossip interval), not paused:
//! the writer commits on its own schedule, so a script waits for states
//! (`stabilize`, `wait_hints`) rather than for amounts of time.

pub mod cluster;
pub mod net;
pub mod script;

#[cfg(test)]
mod tests {
    use super::script::{rewrite, run};
    use std::path::Path;

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

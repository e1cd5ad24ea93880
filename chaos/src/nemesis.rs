//! The nemesis: faults, and a schedule that mixes them with heals, drawn
//! from a seed that is printed so a failing run replays exactly.
//!
//! Faults: kill -9 (the node restarts at the heal); pause (SIGSTOP) and
//! resume; isolate a node from its peers; split the cluster into a majority
//! and a minority; cut one link (a non-transitive partition); packet loss on
//! one node's links; latency on one node's peer transport; a slow link
//! (`tbf`) while large values move; a clock step on one node; and a kill in
//! the middle of a large transfer (a node killed while hints and
//! anti-entropy move values near the size limit to it).

use crate::netns::Net;
use crate::nodes::Node;
use crate::workload::Rng;
use std::fmt;
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    Kill(usize),
    Pause(usize),
    Isolate(usize),
    Split(Vec<usize>),
    Cut(usize, usize),
    Loss(usize, u8),
    Latency(usize, u64),
    Slow(usize),
    Clock(usize, i64),
    /// Kill `node` once the transfers to it are under way (it was down, came
    /// back, and is taking hints and repairs of large values).
    KillMidTransfer(usize),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |i: &usize| format!("n{}", i + 1);
        match self {
            Fault::Kill(i) => write!(f, "kill -9 {}", n(i)),
            Fault::Pause(i) => write!(f, "pause {}", n(i)),
            Fault::Isolate(i) => write!(f, "isolate {}", n(i)),
            Fault::Split(minority) => write!(
                f,
                "split off {}",
                minority.iter().map(n).collect::<Vec<_>>().join(",")
            ),
            Fault::Cut(a, b) => write!(f, "cut {}-{}", n(a), n(b)),
            Fault::Loss(i, p) => write!(f, "{p}% loss on {}", n(i)),
            Fault::Latency(i, ms) => write!(f, "{ms} ms latency on {}", n(i)),
            Fault::Slow(i) => write!(f, "slow link on {}", n(i)),
            Fault::Clock(i, ms) => write!(f, "clock of {} {ms:+} ms", n(i)),
            Fault::KillMidTransfer(i) => write!(f, "kill {} mid-transfer", n(i)),
        }
    }
}

/// One step: a fault held for `hold_s`, then healed for `heal_s`.
#[derive(Clone, Debug)]
pub struct Step {
    pub fault: Fault,
    pub hold_s: u64,
    pub heal_s: u64,
}

/// Which faults a schedule may draw.
#[derive(Clone, Copy, Debug)]
pub enum Palette {
    /// Every fault, clock steps of modest size included.
    All,
    /// Only faults that leave clocks alone (the clock runs set one node's
    /// clock for the whole run).
    NoClock,
}

/// A schedule of about `total_s` seconds from `seed`.
pub fn schedule(seed: u64, nodes: usize, total_s: u64, palette: Palette) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut steps = Vec::new();
    let mut t = 0;
    while t < total_s {
        let a = rng.below(nodes as u64) as usize;
        let b = (a + 1 + rng.below(nodes as u64 - 1) as usize) % nodes;
        let kinds = match palette {
            Palette::All => 10,
            Palette::NoClock => 9,
        };
        let fault = match rng.below(kinds) {
            0 => Fault::Kill(a),
            1 => Fault::Pause(a),
            2 => Fault::Isolate(a),
            3 => {
                let mut minority = vec![a];
                if nodes >= 5 {
                    minority.push(b);
                }
                Fault::Split(minority)
            }
            4 => Fault::Cut(a, b),
            5 => Fault::Loss(a, 20 + rng.below(21) as u8),
            6 => Fault::Latency(a, 20 + rng.below(180)),
            7 => Fault::Slow(a),
            8 => Fault::KillMidTransfer(a),
            _ => Fault::Clock(a, if rng.below(2) == 0 { -3_000 } else { 2_000 }),
        };
        let hold_s = 4 + rng.below(7);
        let heal_s = 2 + rng.below(4);
        t += hold_s + heal_s;
        steps.push(Step {
            fault,
            hold_s,
            heal_s,
        });
    }
    steps
}

/// Applies and heals faults on a running cluster.
pub struct Nemesis<'a> {
    pub net: &'a Net,
    pub bin: &'a Path,
    pub config: &'a Path,
    /// The run's fixed clock offset (node, ms): every fault file written for
    /// that node keeps it, so other faults never step its clock.
    pub keep_clock: Option<(usize, i64)>,
}

impl Nemesis<'_> {
    /// Node `i`'s fault-file lines outside any fault.
    fn base(&self, i: usize) -> String {
        match self.keep_clock {
            Some((c, ms)) if c == i => format!("clock_offset_ms = {ms}\n"),
            _ => String::new(),
        }
    }

    pub fn apply(&self, nodes: &mut [Node], fault: &Fault) -> Result<(), String> {
        let peers = |i: usize| (0..nodes.len()).filter(move |j| *j != i);
        match fault {
            Fault::Kill(i) => nodes[*i].kill(),
            Fault::Pause(i) => nodes[*i].pause(),
            Fault::Isolate(i) => {
                for j in peers(*i) {
                    self.net.drop_between(*i, self.net.node_ip(j), 100)?;
                }
            }
            Fault::Split(minority) => {
                for &i in minority {
                    for j in (0..nodes.len()).filter(|j| !minority.contains(j)) {
                        self.net.drop_between(i, self.net.node_ip(j), 100)?;
                        self.net.drop_between(j, self.net.node_ip(i), 100)?;
                    }
                }
            }
            Fault::Cut(a, b) => {
                self.net.drop_between(*a, self.net.node_ip(*b), 100)?;
                self.net.drop_between(*b, self.net.node_ip(*a), 100)?;
            }
            Fault::Loss(i, p) => {
                for j in peers(*i) {
                    self.net.drop_between(*i, self.net.node_ip(j), *p)?;
                }
            }
            Fault::Latency(i, ms) => {
                nodes[*i].set_faults(&format!("{}peer_delay_ms = {ms}\n", self.base(*i)))
            }
            Fault::Slow(i) => self.net.slow(*i, "4mbit")?,
            Fault::Clock(i, ms) => nodes[*i].set_faults(&format!("clock_offset_ms = {ms}\n")),
            Fault::KillMidTransfer(i) => {
                // Down long enough to gather hints of large values, back up,
                // then killed while they (and repairs) stream to it.
                nodes[*i].kill();
                std::thread::sleep(std::time::Duration::from_secs(3));
                nodes[*i].start(self.bin, self.config)?;
                std::thread::sleep(std::time::Duration::from_millis(1_500));
                nodes[*i].kill();
            }
        }
        Ok(())
    }

    /// Heals everything: links, paused and killed nodes, fault switches
    /// (the run's fixed clock offset stays).
    pub fn heal(&self, nodes: &mut [Node]) -> Result<(), String> {
        self.net.heal_all()?;
        for (i, n) in nodes.iter_mut().enumerate() {
            n.set_faults(&self.base(i));
            if n.paused {
                n.resume();
            }
            if n.stopped_on_purpose {
                n.start(self.bin, self.config)?;
            }
        }
        Ok(())
    }
}

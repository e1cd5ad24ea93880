//! What the metadata log carries, and the pure state machine applying it.
//! Every node applies the same commands in the same order, so every node
//! holds the same history: a command is decided by the state alone, never
//! by a clock or by which node applies it.

use crate::layout::history::{AtRisk, LayoutHistory, Tracker};
use crate::layout::record::{HistoryRecord, LayoutRecord};
use crate::layout::Layout;
use serde::{Deserialize, Serialize};

/// One metadata change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Append a layout version. The proposer computed it from the version
    /// it read; a version that is no longer the next one is refused (two
    /// concurrent changes: the later is refused, never forked).
    Propose { layout: LayoutRecord, force: bool },
    /// `node` reached `version` on `tracker`.
    Report {
        node: String,
        tracker: Tracker,
        version: u64,
    },
    /// Count `node` as done with every live version (it will never report).
    Skip { node: String },
}

/// What applying a command did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaReply {
    /// Applied (or a log entry that is not a command).
    #[default]
    Done,
    /// A report that moved nothing (late, out of order, or not a member).
    Unchanged,
    /// Refused, and why; the state is unchanged.
    Refused(String),
    /// A skip: what it may lose.
    Skipped(Vec<AtRisk>),
}

/// The replicated state: the layout history, once the first version was
/// agreed.
#[derive(Clone, Debug, Default)]
pub struct MetaState {
    pub history: Option<LayoutHistory>,
}

impl MetaState {
    /// Applies one command.
    pub fn apply(&mut self, command: &MetaCommand) -> MetaReply {
        match command {
            MetaCommand::Propose { layout, force } => {
                let layout = match Layout::from_record(layout) {
                    Ok(l) => l,
                    Err(why) => return MetaReply::Refused(format!("malformed layout: {why}")),
                };
                match &mut self.history {
                    None if layout.version() == 1 && !layout.is_empty() => {
                        self.history = Some(LayoutHistory::new(layout));
                        MetaReply::Done
                    }
                    None => MetaReply::Refused(format!(
                        "the first layout must be version 1 with a member, not version {}",
                        layout.version()
                    )),
                    Some(h) => match h.propose(layout, *force) {
                        Ok(()) => MetaReply::Done,
                        Err(why) => MetaReply::Refused(why.to_string()),
                    },
                }
            }
            MetaCommand::Report {
                node,
                tracker,
                version,
            } => match &mut self.history {
                Some(h) => {
                    if h.report(node, *tracker, *version) {
                        MetaReply::Done
                    } else {
                        MetaReply::Unchanged
                    }
                }
                None => MetaReply::Unchanged,
            },
            MetaCommand::Skip { node } => match &mut self.history {
                Some(h) if h.live().iter().any(|l| l.contains(node)) => {
                    MetaReply::Skipped(h.skip(node))
                }
                _ => MetaReply::Refused(format!(
                    "'{}' is in no live layout version",
                    crate::wire::printable(node)
                )),
            },
        }
    }

    pub fn to_record(&self) -> Option<HistoryRecord> {
        self.history.as_ref().map(LayoutHistory::to_record)
    }

    pub fn from_record(r: Option<&HistoryRecord>) -> Result<MetaState, String> {
        Ok(MetaState {
            history: r.map(LayoutHistory::from_record).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Member;

    fn first() -> Layout {
        Layout::initial(["a", "b", "c"].map(Member::new), 3, 4)
    }

    fn propose(l: &Layout) -> MetaCommand {
        MetaCommand::Propose {
            layout: l.to_record(),
            force: false,
        }
    }

    /// Two proposals computed from the same version: the first applied
    /// wins, the second is refused and changes nothing — in whichever
    /// order a log holds them, every node ends with the same history.
    #[test]
    fn two_changes_from_one_version_never_fork() {
        let one = first();
        let add_d = one.next(["a", "b", "c", "d"].map(Member::new));
        let add_e = one.next(["a", "b", "c", "e"].map(Member::new));
        for (x, y) in [(&add_d, &add_e), (&add_e, &add_d)] {
            let mut s = MetaState::default();
            assert_eq!(s.apply(&propose(&one)), MetaReply::Done);
            assert_eq!(s.apply(&propose(x)), MetaReply::Done);
            let refused = s.apply(&propose(y));
            assert!(matches!(refused, MetaReply::Refused(_)), "{refused:?}");
            let h = s.history.as_ref().unwrap();
            assert_eq!(h.current(), x);
            assert_eq!(h.live().len(), 2);
        }
    }

    /// The first version must be version 1; a malformed layout is refused
    /// with its reason; a skip names a member of a live version.
    #[test]
    fn bad_commands_are_refused_and_change_nothing() {
        let mut s = MetaState::default();
        let two = first().next(["a", "b"].map(Member::new));
        assert!(matches!(s.apply(&propose(&two)), MetaReply::Refused(_)));
        assert!(s.history.is_none());
        let mut bad = first().to_record();
        bad.replicas.clear();
        let r = s.apply(&MetaCommand::Propose {
            layout: bad,
            force: false,
        });
        assert!(
            matches!(&r, MetaReply::Refused(w) if w.contains("malformed")),
            "{r:?}"
        );
        assert_eq!(s.apply(&propose(&first())), MetaReply::Done);
        let r = s.apply(&MetaCommand::Skip { node: "zz".into() });
        assert!(matches!(r, MetaReply::Refused(_)));
        let r = s.apply(&MetaCommand::Report {
            node: "a".into(),
            tracker: Tracker::Ack,
            version: 9,
        });
        assert_eq!(r, MetaReply::Unchanged, "a report past the newest version");
    }
}

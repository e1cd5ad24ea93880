//! Which pass a target's hints get — replay to it, rescue to another
//! replica, or apply here — from what is known of the target. Pure.

/// What one pass over a target's hints does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassKind {
    /// Deliver to the target; rescue what it refused for longer than this.
    Replay { rescue_refused_after_ms: u64 },
    /// Hand hints older than this (all of them: `None`) to another live
    /// replica of their key.
    Rescue { older_than_ms: Option<u64> },
    /// Hints addressed to this node itself (no coordinator stores one, but
    /// an older store may hold some): apply them here.
    ApplyHere,
}

/// The pass for a target: whether it is this node, whether it is still a
/// member, whether gossip says it is up, and `hints.max_age_ms`. Pure.
pub fn pass_kind(is_self: bool, member: bool, up: bool, max_age_ms: u64) -> PassKind {
    if is_self {
        return PassKind::ApplyHere;
    }
    match (member, up) {
        (false, _) => PassKind::Rescue {
            older_than_ms: None,
        },
        (true, true) => PassKind::Replay {
            rescue_refused_after_ms: max_age_ms,
        },
        (true, false) => PassKind::Rescue {
            older_than_ms: Some(max_age_ms),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sweep M6: hints for a target that refused them (while up) or that
    /// was removed from the configuration were kept forever, pinning the
    /// hint floor and tombstone GC. Now the first are rescued after
    /// `max_age`, the second at once.
    #[test]
    fn every_target_s_hints_have_a_way_out() {
        let age = 60_000;
        assert_eq!(pass_kind(true, true, true, age), PassKind::ApplyHere);
        assert_eq!(
            pass_kind(false, true, true, age),
            PassKind::Replay {
                rescue_refused_after_ms: age
            }
        );
        assert_eq!(
            pass_kind(false, true, false, age),
            PassKind::Rescue {
                older_than_ms: Some(age)
            }
        );
        for up in [true, false] {
            assert_eq!(
                pass_kind(false, false, up, age),
                PassKind::Rescue {
                    older_than_ms: None
                },
                "a removed member's hints wait for nothing"
            );
        }
    }
}

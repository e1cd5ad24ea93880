//! Whose clock is wrong: the decision a node takes from the clock offsets
//! gossip measured. Pure.
//!
//! Every gossip answer carries the answering peer's wall clock in its own
//! entry, so each exchange this node started measures one peer's offset —
//! its clock minus ours at the moment it answered, estimated as our clock at
//! the middle of the round trip (Cristian's method). A sample whose round
//! trip took longer than [`MAX_SAMPLE_RTT_MS`] is discarded: an answer held
//! up by a paused peer or a congested link would make its clock look behind
//! by the delay. Offsets are measured only on exchanges this node started,
//! to the address the configuration names: a process that merely connects to
//! us cannot feed us clock samples.
//!
//! The decision ([`decide`]) uses the samples younger than
//! [`MAX_SAMPLE_AGE_MS`], whatever the peers' liveness now: when fewer than
//! half of the members (counting this node) agree with our clock within the
//! allowed drift, our clock is the outlier and the median offset of the
//! others is the cluster's time. When too few fresh samples exist to decide
//! (a partition cut us off from the majority), the previous correction is
//! kept: a lagging node in a minority does not forget how far it lags.
//!
//! A step of the wall clock at runtime (someone set the time, a VM resumed)
//! is seen locally, without waiting for gossip, by comparing the wall clock
//! with the monotonic clock ([`StepDetector`]); until the next decision with
//! a fresh majority, the node cannot vouch for its clock and refuses to
//! coordinate writes.

/// Samples whose round trip took longer than this are discarded (ms).
pub const MAX_SAMPLE_RTT_MS: u64 = 500;
/// Samples older than this no longer count (ms).
pub const MAX_SAMPLE_AGE_MS: u64 = 60_000;
/// A change of (wall − monotonic) beyond this is a step of the wall clock (ms).
pub const STEP_TOLERANCE_MS: i64 = 1_000;

/// One peer's clock offset (its clock minus ours, ms) and when we measured it
/// (our monotonic ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub offset_ms: i64,
    pub at_mono_ms: u64,
}

/// The offset of a peer whose wall clock read `peer_wall_ms` when it
/// answered an exchange we sent at `sent_wall_ms` and got back `rtt_ms`
/// later; `None` when the round trip was too slow to trust.
pub fn sample_offset(peer_wall_ms: u64, sent_wall_ms: u64, rtt_ms: u64) -> Option<i64> {
    if rtt_ms > MAX_SAMPLE_RTT_MS {
        return None;
    }
    let ours = i128::from(sent_wall_ms) + i128::from(rtt_ms / 2);
    let offset = i128::from(peer_wall_ms) - ours;
    Some(offset.clamp(i128::from(-i64::MAX), i128::from(i64::MAX)) as i64)
}

/// A sample taken when our wall − monotonic time was `then_ms`, against our
/// clock now that it is `now_ms`: whatever moved our wall clock since (steps
/// too small to count as one, slewing) moved every peer's offset the other
/// way. Without this, steps of 900 ms each round, every one under the step
/// tolerance and each vouched for on old samples, added up to a clock many
/// seconds off that the cluster still vouched for.
pub fn rebased(sample: Sample, then_ms: i64, now_ms: i64) -> Sample {
    Sample {
        offset_ms: sample
            .offset_ms
            .saturating_sub(now_ms.saturating_sub(then_ms)),
        ..sample
    }
}

/// What the samples say about our clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The offset to add to our clock to get the cluster's time.
    pub offset_ms: i64,
    /// Whether a strict majority of the members (counting us) had fresh
    /// samples agreeing, within half the drift, on the time chosen: only then
    /// does the decision vouch for our clock.
    pub fresh_majority: bool,
}

/// Decides the cluster offset from the peers' samples at monotonic time
/// `now_mono_ms`, in a cluster of `members` (us included); `current` is the
/// correction in force, kept when the fresh samples are too few.
pub fn decide(
    samples: &[Sample],
    members: usize,
    max_drift_ms: i64,
    now_mono_ms: u64,
    current: i64,
) -> Decision {
    let fresh: Vec<i64> = samples
        .iter()
        .filter(|s| now_mono_ms.saturating_sub(s.at_mono_ms) <= MAX_SAMPLE_AGE_MS)
        .map(|s| s.offset_ms)
        .collect();
    if (fresh.len() + 1) * 2 <= members {
        return Decision {
            offset_ms: current,
            fresh_majority: false,
        };
    }
    let offset_ms = cluster_offset(&fresh, max_drift_ms);
    // Vouch only for a time a strict majority of the members (us included
    // when we keep our clock) agree with: one peer 60 s away from us in a
    // cluster of three is a tie, and cannot tell which of us lags.
    let half = max_drift_ms.unsigned_abs() / 2;
    let peers_agreeing = fresh
        .iter()
        .filter(|o| o.abs_diff(offset_ms) <= half)
        .count();
    let supporters = peers_agreeing + usize::from(offset_ms == 0);
    if supporters * 2 <= members {
        return Decision {
            offset_ms: current,
            fresh_majority: false,
        };
    }
    Decision {
        offset_ms,
        fresh_majority: true,
    }
}

/// The offset (ms) to add to our clock to get the cluster's time: 0 when our
/// clock agrees (within half the allowed drift) with at least half of the
/// members (counting us), else the median of the peers' offsets. Half, so
/// that any two uncorrected clocks agree with a common member and so are
/// within the drift of each other: a version one of them issued is never
/// refused, nor hidden from a read, by the other.
pub fn cluster_offset(offsets: &[i64], max_drift_ms: i64) -> i64 {
    let agree = offsets
        .iter()
        .filter(|o| o.unsigned_abs() <= max_drift_ms.unsigned_abs() / 2)
        .count();
    let outlier = (agree + 1) * 2 < offsets.len() + 1;
    if !outlier {
        return 0;
    }
    let mut sorted = offsets.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

/// Notices steps of the wall clock by watching `wall − monotonic`, which
/// only slow rate corrections (NTP slewing) move otherwise.
#[derive(Clone, Copy, Debug)]
pub struct StepDetector {
    baseline_ms: i64,
    stepped: bool,
    /// Steps seen so far: each one moves the baseline, so a second step
    /// while still unvouched is noticed too (gossip then drops the samples
    /// taken before it).
    steps: u64,
}

impl StepDetector {
    pub fn new(wall_ms: u64, mono_ms: u64) -> Self {
        StepDetector {
            baseline_ms: diff(wall_ms, mono_ms),
            stepped: false,
            steps: 0,
        }
    }

    /// Not vouched for yet: stays "stepped" until the first
    /// [`StepDetector::rebase`] (a node with peers, before gossip measured
    /// its clock).
    pub fn unvouched(wall_ms: u64, mono_ms: u64) -> Self {
        StepDetector {
            stepped: true,
            ..Self::new(wall_ms, mono_ms)
        }
    }

    /// Looks at the clocks now; answers whether the wall clock has stepped
    /// since the baseline (it stays stepped until [`StepDetector::rebase`]).
    pub fn check(&mut self, wall_ms: u64, mono_ms: u64) -> bool {
        let now = diff(wall_ms, mono_ms);
        if now.saturating_sub(self.baseline_ms).unsigned_abs() > STEP_TOLERANCE_MS.unsigned_abs() {
            self.stepped = true;
            self.steps += 1;
            self.baseline_ms = now;
        }
        self.stepped
    }

    /// How many steps were seen since this detector was made.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// A fresh majority vouched for the clock: this is the new baseline.
    pub fn rebase(&mut self, wall_ms: u64, mono_ms: u64) {
        self.baseline_ms = diff(wall_ms, mono_ms);
        self.stepped = false;
    }
}

fn diff(wall_ms: u64, mono_ms: u64) -> i64 {
    (i128::from(wall_ms) - i128::from(mono_ms)).clamp(i128::from(i64::MIN), i128::from(i64::MAX))
        as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_that_agrees_with_us_means_no_correction() {
        assert_eq!(cluster_offset(&[], 5_000), 0);
        assert_eq!(cluster_offset(&[10, -20, 90_000], 5_000), 0);
        assert_eq!(
            cluster_offset(&[90_000, 10], 5_000),
            0,
            "a tie keeps our clock"
        );
    }

    #[test]
    fn extreme_offsets_do_not_overflow() {
        assert_eq!(cluster_offset(&[i64::MIN, i64::MIN], 5_000), i64::MIN);
        assert_eq!(cluster_offset(&[i64::MIN, 0, 1], 5_000), 0);
        assert_eq!(sample_offset(u64::MAX, 0, 0), Some(i64::MAX));
    }

    /// Review of 06: clocks at +3 s and -3 s with a drift of 5 s were both
    /// left uncorrected (each agreed with most members within the drift), so
    /// one's acknowledged versions were "runaway" to the other.
    #[test]
    fn clocks_off_by_more_than_half_the_drift_are_corrected() {
        // We run 3 s ahead of three members and 6 s ahead of one.
        assert_eq!(
            cluster_offset(&[-3_000, -6_000, -3_000, -3_000], 5_000),
            -3_000
        );
        // Within half the drift of most: left alone.
        assert_eq!(cluster_offset(&[-2_000, -5_000, -2_000, -2_000], 5_000), 0);
    }

    #[test]
    fn an_outlier_takes_the_median_of_the_others() {
        assert_eq!(
            cluster_offset(&[60_000, 60_010, 59_990, 60_005], 5_000),
            60_005
        );
        assert_eq!(cluster_offset(&[-120_000, -119_000], 5_000), -119_000);
    }

    /// Issue 06 finding 6: an answer delayed by a pause made a healthy node
    /// believe it was seconds ahead.
    #[test]
    fn slow_round_trips_are_not_samples() {
        assert_eq!(sample_offset(10_000, 10_000, 100), Some(-50));
        assert_eq!(sample_offset(10_000, 3_000, 7_000), None);
    }

    fn s(offset_ms: i64, at_mono_ms: u64) -> Sample {
        Sample {
            offset_ms,
            at_mono_ms,
        }
    }

    /// Issue 06 finding 6: a node at −60 s split into the minority logged
    /// "agrees with the cluster again" and coordinated writes 60 s in the
    /// past.
    #[test]
    fn a_minority_keeps_its_correction() {
        // Five members; we lag by 60 s and all four peers told us so.
        let all = [s(60_000, 0), s(60_010, 0), s(59_990, 0), s(60_005, 0)];
        let d = decide(&all, 5, 5_000, 1_000, 0);
        assert_eq!(
            d,
            Decision {
                offset_ms: 60_005,
                fresh_majority: true
            }
        );
        // Split: only one peer (of our minority) still answers; the majority's
        // samples age out.
        let later = [s(60_000, 0), s(60_010, 0), s(59_990, 0), s(60_003, 100_000)];
        let d = decide(&later, 5, 5_000, 100_000, 60_005);
        assert_eq!(
            d,
            Decision {
                offset_ms: 60_005,
                fresh_majority: false
            }
        );
    }

    /// Review of the clock-behind chaos fix: with one peer of three down,
    /// a node 60 s behind had a single sample (+60 s), found no outlier in a
    /// tie, and vouched for its clock uncorrected; it then read the others'
    /// versions as a runaway clock's. A tie vouches for nobody.
    #[test]
    fn a_tie_vouches_for_no_clock() {
        let d = decide(&[s(60_000, 0)], 3, 5_000, 1_000, 0);
        assert!(!d.fresh_majority, "{d:?}");
        assert_eq!(d.offset_ms, 0, "the correction in force is kept");
        // The same for the peer on the other side of the tie.
        assert!(!decide(&[s(-60_000, 0)], 3, 5_000, 1_000, 0).fresh_majority);
        // Five members, two peers answering, one of them agreeing with us.
        let d = decide(&[s(60_000, 0), s(10, 0)], 5, 5_000, 1_000, 0);
        assert!(!d.fresh_majority, "{d:?}");
        // Two of three agreeing (us and one peer) is a majority.
        let d = decide(&[s(10, 0)], 3, 5_000, 1_000, 0);
        assert_eq!(
            d,
            Decision {
                offset_ms: 0,
                fresh_majority: true
            }
        );
        // Five members: three peers agree we lag; the fourth is silent.
        let d = decide(
            &[s(60_000, 0), s(60_010, 0), s(59_990, 0)],
            5,
            5_000,
            1_000,
            0,
        );
        assert_eq!(
            d,
            Decision {
                offset_ms: 60_000,
                fresh_majority: true
            }
        );
        // Peers that disagree among themselves back no time.
        let d = decide(&[s(60_000, 0), s(-60_000, 0)], 3, 5_000, 1_000, 7);
        assert_eq!(
            d,
            Decision {
                offset_ms: 7,
                fresh_majority: false
            }
        );
    }

    /// Review of the clock fixes: a node whose new samples were all
    /// discarded (slow round trips) vouched every round on old ones while
    /// its clock moved 900 ms a round, under the step tolerance; the steps
    /// added up. Old samples now follow our clock's moves.
    #[test]
    fn old_samples_follow_our_clock() {
        let old = s(0, 0);
        // Our clock moved 9 s forward (ten small steps) since the sample.
        let now = rebased(old, 1_000, 10_000);
        assert_eq!(now.offset_ms, -9_000);
        let d = decide(&[now, now], 3, 5_000, 100, 0);
        assert_eq!(
            d,
            Decision {
                offset_ms: -9_000,
                fresh_majority: true
            },
            "the cluster says we run 9 s ahead"
        );
        assert_eq!(rebased(s(60_000, 0), 5, 5).offset_ms, 60_000);
    }

    #[test]
    fn a_step_of_the_wall_clock_is_noticed_until_rebased() {
        let mut d = StepDetector::new(1_000_000, 50);
        assert!(!d.check(1_000_950, 1_000), "time passing is no step");
        assert!(d.check(1_060_000, 1_100), "a minute forward");
        assert!(
            d.check(1_000_100, 1_150),
            "stays stepped even when set back"
        );
        d.rebase(1_000_200, 1_200);
        assert!(!d.check(1_000_300, 1_300));
        assert!(d.check(940_000, 1_400), "a minute back");
        assert_eq!(d.steps(), 3);
    }

    /// Review of the clock-behind chaos fix: a node that booted unvouched
    /// and was then stepped (NTP's first sync) kept the samples taken before
    /// the step, vouched on them and rebased onto the stepped clock. Every
    /// step is counted, so the samples before each can be dropped.
    #[test]
    fn each_step_is_counted_even_while_unvouched() {
        let mut d = StepDetector::unvouched(1_000_000, 0);
        assert!(d.check(1_000_500, 500));
        assert_eq!(d.steps(), 0, "unvouched is not a step");
        assert!(d.check(1_061_000, 1_000), "NTP steps it a minute forward");
        assert_eq!(d.steps(), 1);
        assert!(d.check(1_061_500, 1_500));
        assert_eq!(d.steps(), 1, "time passing after the step is no step");
        assert!(d.check(1_001_600, 1_600), "and back");
        assert_eq!(d.steps(), 2);
    }
}

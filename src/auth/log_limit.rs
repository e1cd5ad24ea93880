//! Rate limits for log lines an outsider can cause (a refused token, a
//! reload that keeps failing): at most `max_lines` lines per window of
//! `window_ms`; the lines beyond are only counted, and the first line
//! logged after them says how many were suppressed. A flood of refusals
//! thus costs `max_lines` lines and one summary per window, not one line per
//! request. Pure: the caller passes the (monotonic) time; a suppressed count
//! is reported with the next line logged (none is lost, and none is written
//! while nothing happens).

/// One kind of log line's limit.
#[derive(Clone, Debug)]
pub struct LogLimiter {
    max_lines: u32,
    window_ms: u64,
    window_start_ms: Option<u64>,
    lines: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// `max_lines` (at least 1) per `window_ms`.
    pub const fn new(max_lines: u32, window_ms: u64) -> LogLimiter {
        LogLimiter {
            max_lines: if max_lines == 0 { 1 } else { max_lines },
            window_ms,
            window_start_ms: None,
            lines: 0,
            suppressed: 0,
        }
    }

    /// `Some(k)`: log this line, reporting the `k` lines suppressed before
    /// it; `None`: suppress it (it is counted).
    pub fn admit(&mut self, now_ms: u64) -> Option<u64> {
        let fresh = self
            .window_start_ms
            .is_none_or(|start| now_ms.saturating_sub(start) >= self.window_ms);
        if fresh {
            self.window_start_ms = Some(now_ms);
            self.lines = 0;
        }
        if self.lines < self.max_lines {
            self.lines += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }

    /// Lines suppressed since the last one logged.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// Starts afresh (the next line is logged at once).
    pub fn reset(&mut self) {
        *self = LogLimiter::new(self.max_lines, self.window_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_costs_a_few_lines_and_one_summary_per_window() {
        let mut l = LogLimiter::new(3, 10_000);
        let logged: Vec<_> = (0..1000).filter_map(|i| l.admit(i)).collect();
        assert_eq!(logged, vec![0, 0, 0]);
        assert_eq!(l.suppressed(), 997);
        // The next window's first line carries the count.
        assert_eq!(l.admit(10_000), Some(997));
        assert_eq!(l.admit(10_001), Some(0));
        assert_eq!(l.admit(10_002), Some(0));
        assert_eq!(l.admit(10_003), None);
        assert_eq!(l.admit(25_000), Some(1));
    }

    #[test]
    fn one_a_minute_logs_the_first_at_once() {
        let mut l = LogLimiter::new(1, 60_000);
        assert_eq!(l.admit(5), Some(0));
        for t in (1_000..60_000).step_by(1_000) {
            assert_eq!(l.admit(t), None, "{t}");
        }
        assert_eq!(l.admit(60_005), Some(59));
        l.reset();
        assert_eq!(l.admit(60_006), Some(0), "a reset logs at once");
    }
}

//! The deadlines of one client connection, as a pure state machine: the I/O
//! wrapper ([`super::io`]) reports bytes read and written and blocked
//! writes, the request tracker ([`super::track`]) reports where a request's
//! handler starts and ends, and [`ConnTimer::expiry`] answers when the
//! connection must be closed and why. Time is passed in (milliseconds on
//! the node's monotonic clock), so the tests drive it by hand.
//!
//! A connection is either *busy* (a handler runs: its body, if any, is read
//! under the body deadlines of `http/body.rs`) or *waiting* for its next
//! request (or, on a fresh connection, for its first). While it waits:
//!
//! * the next request head must be complete within `head_timeout` of its
//!   first byte, and no byte of it may lag the one before by more than
//!   `idle_timeout` (slow-loris);
//! * whatever it sends or not, a fresh connection must present its first
//!   head within `head_timeout` of being accepted (the TLS handshake
//!   included), and a kept-alive one its next head within `keep_alive +
//!   head_timeout` of the last byte of its previous response — so no
//!   request position on a connection escapes a deadline (actix-http only
//!   times the head of a connection's first request);
//! * the previous response must be written within `response_timeout` of its
//!   handler's end (a client reading it slowly cannot keep the connection
//!   forever), and a write may stay blocked at most `idle_timeout`.

/// The limits, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    pub head_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub keep_alive_ms: u64,
    pub response_timeout_ms: u64,
}

/// Why a connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// A request head (or a fresh connection's first one) took too long.
    Head,
    /// Bytes of a request head stopped arriving.
    HeadIdle,
    /// A response could not be written in time (the client does not read).
    Write,
}

impl Expiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::Head => "head",
            Expiry::HeadIdle => "head_idle",
            Expiry::Write => "write",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Busy,
    Waiting {
        /// When the wait began: the accept, or the end of the last handler.
        since_ms: u64,
        /// No request was served yet on this connection.
        first: bool,
        /// The last response byte written since the wait began.
        last_write_ms: Option<u64>,
        /// The first and the latest byte of the next head.
        head: Option<(u64, u64)>,
    },
}

/// One connection's deadline state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnTimer {
    phase: Phase,
    /// A write has been blocked since then.
    write_blocked_ms: Option<u64>,
}

impl ConnTimer {
    /// A connection accepted at `now_ms`.
    pub fn accepted(now_ms: u64) -> ConnTimer {
        ConnTimer {
            phase: Phase::Waiting {
                since_ms: now_ms,
                first: true,
                last_write_ms: None,
                head: None,
            },
            write_blocked_ms: None,
        }
    }

    /// Bytes arrived from the client.
    pub fn read(&mut self, now_ms: u64) {
        if let Phase::Waiting { head, .. } = &mut self.phase {
            let first = head.map_or(now_ms, |(first, _)| first);
            *head = Some((first, now_ms));
        }
    }

    /// Bytes went out to the client.
    pub fn wrote(&mut self, now_ms: u64) {
        self.write_blocked_ms = None;
        if let Phase::Waiting { last_write_ms, .. } = &mut self.phase {
            *last_write_ms = Some(now_ms);
        }
    }

    /// A write found the socket full (it stays blocked until [`Self::wrote`]).
    pub fn write_blocked(&mut self, now_ms: u64) {
        self.write_blocked_ms.get_or_insert(now_ms);
    }

    /// A request's handler started: its head is complete.
    pub fn request_started(&mut self) {
        self.phase = Phase::Busy;
    }

    /// A request's handler finished; the connection waits for the next one.
    pub fn request_finished(&mut self, now_ms: u64) {
        self.phase = Phase::Waiting {
            since_ms: now_ms,
            first: false,
            last_write_ms: None,
            head: None,
        };
    }

    /// When the connection began to wait (`None`: a handler runs).
    pub fn waiting_since_ms(&self) -> Option<u64> {
        match self.phase {
            Phase::Busy => None,
            Phase::Waiting { since_ms, .. } => Some(since_ms),
        }
    }

    /// The earliest deadline in force, and what passing it means.
    pub fn deadline(&self, l: &ConnLimits) -> Option<(u64, Expiry)> {
        let mut all: Vec<(u64, Expiry)> = Vec::with_capacity(4);
        if let Some(t) = self.write_blocked_ms {
            all.push((t.saturating_add(l.idle_timeout_ms), Expiry::Write));
        }
        if let Phase::Waiting {
            since_ms,
            first,
            last_write_ms,
            head,
        } = self.phase
        {
            if first {
                all.push((since_ms.saturating_add(l.head_timeout_ms), Expiry::Head));
            } else {
                let response_end = since_ms.saturating_add(l.response_timeout_ms);
                // Writes after the response's own deadline do not extend it.
                let last_out = last_write_ms.unwrap_or(since_ms).min(response_end);
                all.push((
                    last_out
                        .saturating_add(l.keep_alive_ms)
                        .saturating_add(l.head_timeout_ms),
                    Expiry::Head,
                ));
                if self.write_blocked_ms.is_some() {
                    all.push((response_end, Expiry::Write));
                }
            }
            if let Some((first_byte, last_byte)) = head {
                all.push((first_byte.saturating_add(l.head_timeout_ms), Expiry::Head));
                all.push((
                    last_byte.saturating_add(l.idle_timeout_ms),
                    Expiry::HeadIdle,
                ));
            }
        }
        all.into_iter().min_by_key(|(t, _)| *t)
    }

    /// Whether a deadline passed at `now_ms`, and which.
    pub fn expiry(&self, l: &ConnLimits, now_ms: u64) -> Option<Expiry> {
        self.deadline(l)
            .filter(|(t, _)| *t <= now_ms)
            .map(|(_, why)| why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: ConnLimits = ConnLimits {
        head_timeout_ms: 5_000,
        idle_timeout_ms: 2_000,
        keep_alive_ms: 5_000,
        response_timeout_ms: 30_000,
    };

    /// A connection that served one request, answered at `at`.
    fn after_one_request(at: u64) -> ConnTimer {
        let mut t = ConnTimer::accepted(0);
        t.read(10);
        t.request_started();
        t.request_finished(at);
        t.wrote(at);
        t
    }

    #[test]
    fn a_fresh_connection_must_send_its_first_head_in_time() {
        let mut t = ConnTimer::accepted(1_000);
        assert_eq!(t.expiry(&L, 5_999), None);
        assert_eq!(t.expiry(&L, 6_000), Some(Expiry::Head));
        // Trickling bytes does not buy time.
        for ms in (1_000..6_000).step_by(500) {
            t.read(ms);
        }
        assert_eq!(t.expiry(&L, 6_000), Some(Expiry::Head));
    }

    #[test]
    fn the_second_head_of_a_kept_alive_connection_has_a_deadline_too() {
        // The slow-loris of the review: one request, then one byte.
        let mut t = after_one_request(100);
        t.read(200);
        assert_eq!(t.expiry(&L, 2_199), None);
        assert_eq!(
            t.expiry(&L, 2_200),
            Some(Expiry::HeadIdle),
            "the head stalled"
        );
        // One byte every idle period: the head's own deadline ends it.
        let mut t = after_one_request(100);
        for ms in (200..5_200).step_by(1_000) {
            t.read(ms);
            assert_eq!(t.expiry(&L, ms), None, "at {ms}");
        }
        assert_eq!(t.expiry(&L, 5_200), Some(Expiry::Head));
    }

    #[test]
    fn an_idle_kept_alive_connection_ends_after_keep_alive_and_a_head() {
        let t = after_one_request(100);
        assert_eq!(t.expiry(&L, 10_099), None);
        assert_eq!(t.expiry(&L, 10_100), Some(Expiry::Head));
    }

    #[test]
    fn a_request_arriving_late_in_keep_alive_still_gets_a_whole_head_timeout() {
        let mut t = after_one_request(0);
        // First byte just before keep-alive ends: the head may take the
        // full head timeout from its first byte (bounded by ka + head).
        for ms in (4_999..9_999).step_by(1_000) {
            t.read(ms);
        }
        assert_eq!(t.expiry(&L, 9_998), None);
        assert_eq!(t.expiry(&L, 9_999), Some(Expiry::Head));
    }

    #[test]
    fn a_busy_connection_has_no_head_deadline() {
        let mut t = ConnTimer::accepted(0);
        t.request_started();
        assert_eq!(t.deadline(&L), None);
        assert_eq!(t.waiting_since_ms(), None);
        t.request_finished(60_000);
        assert_eq!(t.waiting_since_ms(), Some(60_000));
        assert!(t.deadline(&L).is_some());
    }

    #[test]
    fn a_client_that_does_not_read_is_cut_off() {
        let mut t = after_one_request(0);
        t.write_blocked(1_000);
        assert_eq!(t.expiry(&L, 2_999), None);
        assert_eq!(t.expiry(&L, 3_000), Some(Expiry::Write));
        // Progress resets the blocked timer ...
        t.wrote(2_500);
        assert_eq!(t.expiry(&L, 3_000), None);
    }

    #[test]
    fn a_client_reading_a_trickle_cannot_stretch_a_response_forever() {
        let mut t = ConnTimer::accepted(0);
        t.request_started();
        t.request_finished(0);
        // A byte read every second: never blocked for the idle timeout ...
        let mut ms = 0;
        while ms < 30_000 {
            t.write_blocked(ms);
            t.wrote(ms + 1_000);
            ms += 1_000;
        }
        t.write_blocked(ms);
        // ... but the response's own deadline has passed.
        assert_eq!(t.expiry(&L, 30_000), Some(Expiry::Write));
    }

    #[test]
    fn writes_after_a_response_finished_keep_the_connection_only_within_its_deadline() {
        let mut t = after_one_request(0);
        t.wrote(40_000);
        // Writes past the response deadline do not extend keep-alive.
        assert_eq!(t.expiry(&L, 40_000), Some(Expiry::Head));
    }
}

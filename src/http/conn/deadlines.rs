//! The deadlines of one client connection, as a pure state machine: the I/O
//! wrapper ([`super::io`]) reports bytes read and written and blocked
//! writes, the request tracker ([`super::track`]) reports where a request's
//! handler starts and ends, and [`ConnTimer::expiry`] answers when the
//! connection must be closed and why. Time is passed in (milliseconds on
//! the node's monotonic clock), so the tests drive it by hand.
//!
//! A connection is *waiting* for a request (a fresh one for its first),
//! *busy* while a request's handler runs (its body, if any, is read under
//! the body deadlines of `http/body.rs`; the handler under the request
//! deadline of [`super::track`]), or *responding* while the handler's
//! response body is being sent. While it waits:
//!
//! * the next request head must be complete within `head_timeout` of its
//!   first byte, no byte of it may lag the one before by more than
//!   `idle_timeout` (slow-loris), and it may not exceed [`MAX_HEAD_BYTES`];
//! * whatever it sends or not, a fresh connection must present its first
//!   head within `head_timeout` of being accepted (the TLS handshake
//!   included), and a kept-alive one its next head within `keep_alive +
//!   head_timeout` of the end of its previous response — so no request
//!   position on a connection escapes a deadline (actix-http only times the
//!   head of a connection's first request).
//!
//! While it responds, the response must be sent within `response_timeout`
//! (a client reading it slowly cannot keep the connection forever; bytes it
//! sends meanwhile, say a pipelined request, count toward nothing yet). In
//! every phase a write may stay blocked at most `idle_timeout`.

/// The most bytes a waiting connection may send before a request starts
/// (a request head; actix-http itself would buffer up to 128 KiB of one).
/// [`super::io`] reads no more of a waiting connection; once it has this
/// much, actix-http parses what it has, and a head not complete by then is
/// too large.
pub const MAX_HEAD_BYTES: u64 = 32 << 10;
/// The most a waiting connection's socket is read at once.
pub const WAITING_READ_BYTES: usize = 8 << 10;

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
    /// A request head grew beyond [`MAX_HEAD_BYTES`].
    HeadTooLarge,
    /// A response could not be written in time (the client does not read).
    Write,
}

impl Expiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::Head => "head",
            Expiry::HeadIdle => "head_idle",
            Expiry::HeadTooLarge => "head_too_large",
            Expiry::Write => "write",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Waiting {
        /// When the wait began: the accept, or the end of the last response.
        since_ms: u64,
        /// No request was served yet on this connection.
        first: bool,
        /// The first and the latest byte of the next head, and its bytes.
        head: Option<(u64, u64)>,
        head_bytes: u64,
    },
    Busy,
    Responding {
        since_ms: u64,
    },
}

/// One connection's deadline state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnTimer {
    phase: Phase,
    /// A write has been blocked since then.
    write_blocked_ms: Option<u64>,
    /// A request was served on this connection.
    served: bool,
}

impl ConnTimer {
    /// A connection accepted at `now_ms`.
    pub fn accepted(now_ms: u64) -> ConnTimer {
        ConnTimer {
            phase: Phase::Waiting {
                since_ms: now_ms,
                first: true,
                head: None,
                head_bytes: 0,
            },
            write_blocked_ms: None,
            served: false,
        }
    }

    /// `n` bytes arrived from the client.
    pub fn read(&mut self, now_ms: u64, n: usize) {
        if let Phase::Waiting {
            head, head_bytes, ..
        } = &mut self.phase
        {
            let first = head.map_or(now_ms, |(first, _)| first);
            *head = Some((first, now_ms));
            *head_bytes = head_bytes.saturating_add(n as u64);
        }
    }

    /// The TLS handshake is done: its bytes were no request head.
    pub fn handshake_done(&mut self) {
        if let Phase::Waiting {
            head, head_bytes, ..
        } = &mut self.phase
        {
            *head = None;
            *head_bytes = 0;
        }
    }

    /// Bytes went out to the client.
    pub fn wrote(&mut self) {
        self.write_blocked_ms = None;
    }

    /// A write found the socket full (it stays blocked until [`Self::wrote`]).
    pub fn write_blocked(&mut self, now_ms: u64) {
        self.write_blocked_ms.get_or_insert(now_ms);
    }

    /// A request's handler started: its head is complete.
    pub fn request_started(&mut self) {
        self.phase = Phase::Busy;
        self.served = true;
    }

    /// The handler returned; its response is being sent.
    pub fn responding(&mut self, now_ms: u64) {
        self.phase = Phase::Responding { since_ms: now_ms };
    }

    /// The response was sent (or dropped); the connection waits for the
    /// next request.
    pub fn request_finished(&mut self, now_ms: u64) {
        self.phase = Phase::Waiting {
            since_ms: now_ms,
            first: false,
            head: None,
            head_bytes: 0,
        };
    }

    /// When the connection began to wait (`None`: a request is in hand).
    pub fn waiting_since_ms(&self) -> Option<u64> {
        match self.phase {
            Phase::Waiting { since_ms, .. } => Some(since_ms),
            Phase::Busy | Phase::Responding { .. } => None,
        }
    }

    /// Bytes read since the connection began to wait (0: not waiting).
    pub fn head_bytes(&self) -> u64 {
        match self.phase {
            Phase::Waiting { head_bytes, .. } => head_bytes,
            _ => 0,
        }
    }

    /// Whether a request was served on this connection.
    pub fn served(&self) -> bool {
        self.served
    }

    /// The earliest deadline in force, and what passing it means.
    pub fn deadline(&self, l: &ConnLimits) -> Option<(u64, Expiry)> {
        let mut best: Option<(u64, Expiry)> = None;
        let mut consider = |at: u64, why: Expiry| {
            if best.is_none_or(|(t, _)| at < t) {
                best = Some((at, why));
            }
        };
        if let Some(t) = self.write_blocked_ms {
            consider(t.saturating_add(l.idle_timeout_ms), Expiry::Write);
        }
        match self.phase {
            Phase::Busy => {}
            Phase::Responding { since_ms } => consider(
                since_ms.saturating_add(l.response_timeout_ms),
                Expiry::Write,
            ),
            Phase::Waiting {
                since_ms,
                first,
                head,
                head_bytes,
            } => {
                let _ = head_bytes;
                let allowance = if first {
                    l.head_timeout_ms
                } else {
                    l.keep_alive_ms.saturating_add(l.head_timeout_ms)
                };
                consider(since_ms.saturating_add(allowance), Expiry::Head);
                if let Some((first_byte, last_byte)) = head {
                    consider(first_byte.saturating_add(l.head_timeout_ms), Expiry::Head);
                    consider(
                        last_byte.saturating_add(l.idle_timeout_ms),
                        Expiry::HeadIdle,
                    );
                }
            }
        }
        best
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

    /// A connection that served one request, whose response ended at `at`.
    fn after_one_request(at: u64) -> ConnTimer {
        let mut t = ConnTimer::accepted(0);
        t.read(10, 40);
        t.request_started();
        t.responding(at);
        t.request_finished(at);
        t
    }

    #[test]
    fn a_fresh_connection_must_send_its_first_head_in_time() {
        let mut t = ConnTimer::accepted(1_000);
        assert_eq!(t.expiry(&L, 5_999), None);
        assert_eq!(t.expiry(&L, 6_000), Some(Expiry::Head));
        // Trickling bytes does not buy time.
        for ms in (1_000..6_000).step_by(500) {
            t.read(ms, 1);
        }
        assert_eq!(t.expiry(&L, 6_000), Some(Expiry::Head));
    }

    #[test]
    fn the_second_head_of_a_kept_alive_connection_has_a_deadline_too() {
        // The slow-loris of the review: one request, then one byte.
        let mut t = after_one_request(100);
        t.read(200, 1);
        assert_eq!(t.expiry(&L, 2_199), None);
        assert_eq!(
            t.expiry(&L, 2_200),
            Some(Expiry::HeadIdle),
            "the head stalled"
        );
        // One byte every second: the head's own deadline ends it.
        let mut t = after_one_request(100);
        for ms in (200..5_200).step_by(1_000) {
            t.read(ms, 1);
            assert_eq!(t.expiry(&L, ms), None, "at {ms}");
        }
        assert_eq!(t.expiry(&L, 5_200), Some(Expiry::Head));
    }

    #[test]
    fn head_bytes_count_only_while_waiting() {
        let mut t = after_one_request(0);
        t.read(1, 100);
        t.read(2, 50);
        assert_eq!(t.head_bytes(), 150);
        t.request_started();
        t.read(3, 1 << 20);
        assert_eq!(t.head_bytes(), 0);
        t.request_finished(4);
        assert_eq!(t.head_bytes(), 0);
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
            t.read(ms, 1);
        }
        assert_eq!(t.expiry(&L, 9_998), None);
        assert_eq!(t.expiry(&L, 9_999), Some(Expiry::Head));
    }

    #[test]
    fn a_busy_connection_has_no_head_deadline_and_is_not_waiting() {
        let mut t = ConnTimer::accepted(0);
        t.request_started();
        t.read(100, 60_000);
        assert_eq!(t.deadline(&L), None);
        assert_eq!(t.waiting_since_ms(), None);
        assert!(t.served());
        t.responding(60_000);
        assert_eq!(
            t.waiting_since_ms(),
            None,
            "a response in flight is no wait"
        );
        t.request_finished(61_000);
        assert_eq!(t.waiting_since_ms(), Some(61_000));
    }

    #[test]
    fn bytes_sent_while_a_response_is_read_slowly_are_no_head() {
        // The review's pipelining case: the next request arrives while a
        // large response is still being read.
        let mut t = ConnTimer::accepted(0);
        t.request_started();
        t.responding(1_000);
        t.read(1_500, 40);
        for ms in (2_000..20_000).step_by(1_000) {
            t.write_blocked(ms);
            t.wrote();
            assert_eq!(t.expiry(&L, ms), None, "at {ms}");
        }
        assert_eq!(
            t.expiry(&L, 31_000),
            Some(Expiry::Write),
            "the response's own deadline"
        );
    }

    #[test]
    fn a_client_that_does_not_read_is_cut_off() {
        let mut t = after_one_request(0);
        t.write_blocked(1_000);
        assert_eq!(t.expiry(&L, 2_999), None);
        assert_eq!(t.expiry(&L, 3_000), Some(Expiry::Write));
        t.wrote();
        assert_eq!(t.expiry(&L, 3_000), None);
    }

    #[test]
    fn the_tls_handshake_is_not_the_first_head() {
        let mut t = ConnTimer::accepted(0);
        t.read(10, 500);
        t.handshake_done();
        // The idle bound of a head does not run from the handshake's bytes.
        assert_eq!(t.expiry(&L, 3_000), None);
        assert_eq!(t.expiry(&L, 5_000), Some(Expiry::Head));
    }
}

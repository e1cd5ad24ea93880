//! The node's client connections: [`ConnGuard`] admits each accepted socket
//! into the [`ConnTable`] (caps overall and per address, eviction of the
//! longest waiting), and [`Conn`] is one admitted connection's shared state
//! — its [`ConnTimer`], whether it was evicted, and the waker of the task
//! serving it — reachable from its I/O wrapper ([`super::io::Guarded`]),
//! from the request tracker ([`super::track`]) through the connection's
//! extensions, and from the table (on another worker) to evict it.

use super::deadlines::{ConnLimits, ConnTimer, Expiry};
use super::table::{ConnTable, Evictable, Refusal, TableLimits};
use futures_util::task::AtomicWaker;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// One admitted connection.
pub struct Conn {
    pub id: u64,
    timer: Mutex<ConnTimer>,
    evicted: AtomicBool,
    /// Its current response closes it (`Connection: close`): once that is
    /// sent, the client's further bytes are not read.
    closing: AtomicBool,
    /// The task serving the connection (woken to evict it, or to arm the
    /// deadlines of a new phase).
    pub(super) waker: AtomicWaker,
    /// The guard's clock origin.
    epoch: Instant,
}

impl Conn {
    /// Milliseconds on the guard's monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(super) fn timer(&self) -> MutexGuard<'_, ConnTimer> {
        self.timer.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }

    /// A request's head is complete and its handler starts; `false` if the
    /// connection was evicted first (then no handler may run).
    pub fn start_request(&self) -> bool {
        let mut t = self.timer();
        if self.is_evicted() {
            return false;
        }
        t.request_started();
        true
    }

    pub fn set_closing(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }
}

impl Evictable for Arc<Conn> {
    fn waiting(&self) -> Option<(u64, bool)> {
        let t = self.timer();
        t.waiting_since_ms().map(|since| (since, t.served()))
    }

    fn evict(&self) -> bool {
        // Under the timer's lock: a request cannot start in between.
        let t = self.timer();
        if t.waiting_since_ms().is_none() {
            return false;
        }
        self.evicted.store(true, Ordering::Relaxed);
        drop(t);
        self.waker.wake();
        true
    }
}

/// Counters of the client port, rendered into `/metrics`.
#[derive(Debug, Default)]
pub struct ConnStats {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    pub refused_per_address: AtomicU64,
    pub refused_per_network: AtomicU64,
    pub refused_total: AtomicU64,
    pub evicted: AtomicU64,
    pub timed_out_head: AtomicU64,
    pub timed_out_head_idle: AtomicU64,
    pub timed_out_head_too_large: AtomicU64,
    pub timed_out_write: AtomicU64,
}

impl ConnStats {
    pub fn timed_out(&self, why: Expiry) {
        let c = match why {
            Expiry::Head => &self.timed_out_head,
            Expiry::HeadIdle => &self.timed_out_head_idle,
            Expiry::HeadTooLarge => &self.timed_out_head_too_large,
            Expiry::Write => &self.timed_out_write,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text of these counters.
    pub fn render(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP ringkv_http_connections client connections open now\n\
             # TYPE ringkv_http_connections gauge\n\
             ringkv_http_connections {}",
            get(&self.open)
        );
        let _ = writeln!(
            out,
            "# HELP ringkv_http_connections_accepted_total client connections admitted\n\
             # TYPE ringkv_http_connections_accepted_total counter\n\
             ringkv_http_connections_accepted_total {}",
            get(&self.accepted)
        );
        let _ = writeln!(
            out,
            "# HELP ringkv_http_connections_refused_total client connections refused at a cap \
             (http.max_connections_per_address, four of them per IPv6 /48, http.max_connections)\n\
             # TYPE ringkv_http_connections_refused_total counter\n\
             ringkv_http_connections_refused_total{{cap=\"per_address\"}} {}\n\
             ringkv_http_connections_refused_total{{cap=\"per_network\"}} {}\n\
             ringkv_http_connections_refused_total{{cap=\"total\"}} {}",
            get(&self.refused_per_address),
            get(&self.refused_per_network),
            get(&self.refused_total)
        );
        let _ = writeln!(
            out,
            "# HELP ringkv_http_connections_evicted_total waiting connections closed to make room \
             at http.max_connections\n\
             # TYPE ringkv_http_connections_evicted_total counter\n\
             ringkv_http_connections_evicted_total {}",
            get(&self.evicted)
        );
        let _ = writeln!(
            out,
            "# HELP ringkv_http_connections_timed_out_total client connections closed at a \
             deadline (a request head too slow, stalled or too large, or a response the client \
             did not read in time)\n\
             # TYPE ringkv_http_connections_timed_out_total counter\n\
             ringkv_http_connections_timed_out_total{{deadline=\"head\"}} {}\n\
             ringkv_http_connections_timed_out_total{{deadline=\"head_idle\"}} {}\n\
             ringkv_http_connections_timed_out_total{{deadline=\"head_too_large\"}} {}\n\
             ringkv_http_connections_timed_out_total{{deadline=\"write\"}} {}",
            get(&self.timed_out_head),
            get(&self.timed_out_head_idle),
            get(&self.timed_out_head_too_large),
            get(&self.timed_out_write)
        );
    }
}

/// Admits client connections and holds the open ones.
pub struct ConnGuard {
    table: Mutex<ConnTable<Arc<Conn>>>,
    pub limits: ConnLimits,
    pub table_limits: TableLimits,
    epoch: Instant,
    pub stats: ConnStats,
}

impl ConnGuard {
    pub fn new(limits: ConnLimits, table_limits: TableLimits) -> Arc<ConnGuard> {
        Arc::new(ConnGuard {
            table: Mutex::new(ConnTable::new(table_limits)),
            limits,
            table_limits,
            epoch: Instant::now(),
            stats: ConnStats::default(),
        })
    }

    /// Milliseconds on the guard's monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The instant `ms` on the guard's clock stands for.
    pub fn instant(&self, ms: u64) -> Instant {
        self.epoch + std::time::Duration::from_millis(ms)
    }

    fn table(&self) -> MutexGuard<'_, ConnTable<Arc<Conn>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `ip`, or says why not (counted).
    pub fn admit(&self, ip: IpAddr) -> Result<Arc<Conn>, Refusal> {
        let now = self.now_ms();
        let epoch = self.epoch;
        let mut table = self.table();
        let admitted = table.admit(ip, now, |id| {
            Arc::new(Conn {
                id,
                timer: Mutex::new(ConnTimer::accepted(now)),
                evicted: AtomicBool::new(false),
                closing: AtomicBool::new(false),
                waker: AtomicWaker::new(),
                epoch,
            })
        });
        match admitted {
            Ok((a, conn)) => {
                let conn = conn.clone();
                drop(table);
                if a.evicted.is_some() {
                    self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                }
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                self.stats.open.fetch_add(1, Ordering::Relaxed);
                Ok(conn)
            }
            Err(why) => {
                drop(table);
                let c = match why {
                    Refusal::PerAddress => &self.stats.refused_per_address,
                    Refusal::PerNetwork => &self.stats.refused_per_network,
                    Refusal::Full => &self.stats.refused_total,
                };
                c.fetch_add(1, Ordering::Relaxed);
                Err(why)
            }
        }
    }

    /// The connection `id` closed.
    pub fn release(&self, id: u64) {
        self.table().release(id);
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.table().len()
    }
}

/// The bytes a refused plain-HTTP connection is sent before it is closed.
pub fn refusal_response(why: Refusal) -> Vec<u8> {
    let body = format!(
        "{{\"error\":\"this node holds as many client connections as it allows ({})\",\
         \"code\":\"overloaded\",\"outcome\":\"not_applied\"}}",
        match why {
            Refusal::PerAddress => "http.max_connections_per_address",
            Refusal::PerNetwork => "four times http.max_connections_per_address per IPv6 /48",
            Refusal::Full => "http.max_connections",
        }
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max: usize, per_address: usize) -> Arc<ConnGuard> {
        ConnGuard::new(
            ConnLimits {
                head_timeout_ms: 5_000,
                idle_timeout_ms: 2_000,
                keep_alive_ms: 5_000,
                response_timeout_ms: 30_000,
            },
            TableLimits {
                max_connections: max,
                max_per_address: per_address,
                max_evicting: 4,
                evict_after_ms: 0,
            },
        )
    }

    #[test]
    fn refusals_and_evictions_are_counted_and_evicted_connections_are_told() {
        let g = guard(2, 1);
        let a = g.admit("10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(
            g.admit("10.0.0.1".parse().unwrap()).err(),
            Some(Refusal::PerAddress)
        );
        let b = g.admit("10.0.0.2".parse().unwrap()).unwrap();
        b.timer().request_started();
        let c = g.admit("10.0.0.3".parse().unwrap()).unwrap();
        assert!(a.is_evicted(), "the waiting one made room");
        assert!(!b.is_evicted() && !c.is_evicted());
        assert_eq!(g.stats.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(g.stats.refused_per_address.load(Ordering::Relaxed), 1);
        g.release(a.id);
        assert_eq!(g.open(), 2);
        let mut text = String::new();
        g.stats.render(&mut text);
        assert!(text.contains("ringkv_http_connections 2\n"), "{text}");
        assert!(text.contains("ringkv_http_connections_refused_total{cap=\"per_address\"} 1\n"));
    }

    #[test]
    fn the_refusal_is_a_complete_http_response() {
        let r = String::from_utf8(refusal_response(Refusal::Full)).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "overloaded");
    }
}

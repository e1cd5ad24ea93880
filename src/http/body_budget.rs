//! The node's budget of request-body bytes in memory: bodies being read hold
//! reservations that grow with the bytes they actually buffer (never the
//! size a client merely declares), bounded node-wide
//! (`http.max_inflight_body_bytes`) and per client
//! (`http.max_inflight_body_bytes_per_client`: per token when the request
//! carried a valid one, else per address, IPv6 per /64), so one tenant
//! cannot take the budget every other tenant's writes need. The table of
//! clients holds only clients with bytes reserved, so it is bounded by the
//! bodies in flight.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Whose share a body counts against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The id of the request's valid token.
    Token(String),
    /// The client's address (IPv6 per /64).
    Address(IpAddr),
}

/// The token a request was authenticated with, put into its extensions by
/// the token check, so its body counts against that token's share.
#[derive(Clone, Debug)]
pub struct TokenId(pub String);

/// Which bound a reservation hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exhausted {
    Node = 0,
    Client = 1,
}

#[derive(Debug, Default)]
struct State {
    used: usize,
    by_client: HashMap<ClientKey, usize>,
}

/// The budget.
#[derive(Debug)]
pub struct BodyBudget {
    pub total: usize,
    pub per_client: usize,
    state: Mutex<State>,
    /// Bodies answered 408, by why: too slow in all, stalled, below the rate.
    pub timed_out: [std::sync::atomic::AtomicU64; 3],
    /// Bodies refused 503 at the node's bound, and at a client's share.
    pub refused: [std::sync::atomic::AtomicU64; 2],
}

impl BodyBudget {
    pub fn new(total: usize, per_client: usize) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            total,
            per_client: per_client.min(total),
            state: Mutex::default(),
            timed_out: Default::default(),
            refused: Default::default(),
        })
    }

    /// An empty reservation for `client`'s body.
    pub fn reservation(self: &Arc<Self>, client: ClientKey) -> Reservation {
        Reservation {
            budget: self.clone(),
            client,
            bytes: 0,
        }
    }

    /// Bytes reserved now, node-wide.
    pub fn used(&self) -> usize {
        self.lock().used
    }

    /// The Prometheus text of the budget and its refusals.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        let _ = writeln!(
            out,
            "# HELP ringkv_http_body_bytes request-body bytes held now (http.max_inflight_body_bytes)\n\
             # TYPE ringkv_http_body_bytes gauge\n\
             ringkv_http_body_bytes {}\n\
             # HELP ringkv_http_bodies_timed_out_total request bodies answered 408: not in time \
             (http.body_timeout_ms), stalled (http.idle_timeout_ms), too slow \
             (http.min_body_bytes_per_sec)\n\
             # TYPE ringkv_http_bodies_timed_out_total counter\n\
             ringkv_http_bodies_timed_out_total{{why=\"total\"}} {}\n\
             ringkv_http_bodies_timed_out_total{{why=\"idle\"}} {}\n\
             ringkv_http_bodies_timed_out_total{{why=\"rate\"}} {}\n\
             # HELP ringkv_http_bodies_refused_total request bodies answered 503 at the node's \
             budget or at the client's share of it\n\
             # TYPE ringkv_http_bodies_refused_total counter\n\
             ringkv_http_bodies_refused_total{{bound=\"node\"}} {}\n\
             ringkv_http_bodies_refused_total{{bound=\"client\"}} {}",
            self.used(),
            self.timed_out[0].load(Relaxed),
            self.timed_out[1].load(Relaxed),
            self.timed_out[2].load(Relaxed),
            self.refused[0].load(Relaxed),
            self.refused[1].load(Relaxed),
        );
    }

    /// Clients holding reservations now.
    pub fn clients(&self) -> usize {
        self.lock().by_client.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn grow(&self, client: &ClientKey, n: usize) -> Result<(), Exhausted> {
        let mut s = self.lock();
        let mine = s.by_client.get(client).copied().unwrap_or(0);
        if mine + n > self.per_client {
            return Err(Exhausted::Client);
        }
        if s.used + n > self.total {
            return Err(Exhausted::Node);
        }
        s.used += n;
        *s.by_client.entry(client.clone()).or_insert(0) += n;
        Ok(())
    }

    fn release(&self, client: &ClientKey, n: usize) {
        if n == 0 {
            return;
        }
        let mut s = self.lock();
        s.used -= n;
        if let Some(mine) = s.by_client.get_mut(client) {
            *mine -= n;
            if *mine == 0 {
                s.by_client.remove(client);
            }
        }
    }
}

/// Bytes one body holds; released when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BodyBudget>,
    client: ClientKey,
    bytes: usize,
}

impl Reservation {
    /// Reserves `n` more bytes, or says which bound is in the way.
    pub fn grow(&mut self, n: usize) -> Result<(), Exhausted> {
        self.budget.grow(&self.client, n)?;
        self.bytes += n;
        Ok(())
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(&self.client, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> ClientKey {
        ClientKey::Token(s.into())
    }

    #[test]
    fn one_client_cannot_take_the_whole_budget() {
        let b = BodyBudget::new(1000, 250);
        let mut a1 = b.reservation(token("a"));
        let mut a2 = b.reservation(token("a"));
        a1.grow(200).unwrap();
        assert_eq!(a2.grow(100), Err(Exhausted::Client), "a's share is 250");
        a2.grow(50).unwrap();
        let mut other = b.reservation(token("b"));
        other.grow(250).unwrap();
        assert_eq!(b.used(), 500);
        drop(a1);
        drop(a2);
        assert_eq!(b.used(), 250);
        assert_eq!(b.clients(), 1, "empty clients leave the table");
    }

    #[test]
    fn the_node_bound_holds_across_clients() {
        let b = BodyBudget::new(600, 250);
        let mut rs: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|c| b.reservation(token(c)))
            .collect();
        rs[0].grow(250).unwrap();
        rs[1].grow(250).unwrap();
        assert_eq!(rs[2].grow(200), Err(Exhausted::Node));
        rs[2].grow(100).unwrap();
        drop(rs);
        assert_eq!((b.used(), b.clients()), (0, 0));
    }

    #[test]
    fn a_refused_growth_reserves_nothing() {
        let b = BodyBudget::new(100, 100);
        let mut r = b.reservation(ClientKey::Address("10.0.0.1".parse().unwrap()));
        r.grow(60).unwrap();
        assert!(r.grow(50).is_err());
        assert_eq!((r.bytes(), b.used()), (60, 60));
    }
}

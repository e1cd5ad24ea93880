//! The table of open client connections: a cap overall, a cap per client
//! address (IPv6 per /64, the block one host usually holds) and one per
//! IPv6 /48 (four address caps: a site's subnets), and, when the overall cap
//! is reached, room made by evicting a connection that waits for its next
//! request — from the address holding the most connections first, one that
//! never completed a request before one that did, the longest waiting first
//! (a slow-loris holds connections in exactly that state; a connection with
//! a request in hand is never evicted). Pure: time is passed in; what a
//! connection is waiting on comes from [`Evictable`].

use std::collections::HashMap;
use std::net::IpAddr;

/// The caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableLimits {
    pub max_connections: usize,
    pub max_per_address: usize,
    /// Connections told to close that may still hold their descriptor; a
    /// new connection beyond the cap is refused rather than evicting more.
    pub max_evicting: usize,
    /// A connection must have waited this long to be evicted (one between
    /// two requests of a busy client is not).
    pub evict_after_ms: u64,
}

/// What the table needs to know of a connection.
pub trait Evictable {
    /// Since when it waits for its next request (`None`: a request is in
    /// hand), and whether it completed one before.
    fn waiting(&self) -> Option<(u64, bool)>;
    /// Tell it to close if it still waits (it leaves the table when it
    /// does); answers whether it was told.
    fn evict(&self) -> bool;
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its address holds `max_per_address` connections.
    PerAddress,
    /// Its IPv6 /48 holds four times `max_per_address` connections.
    PerNetwork,
    /// The node holds `max_connections` and none could be evicted.
    Full,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PerAddress => "per_address",
            Refusal::PerNetwork => "per_network",
            Refusal::Full => "total",
        }
    }
}

/// An admitted connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Admitted {
    pub id: u64,
    /// A connection evicted to make room for this one.
    pub evicted: Option<u64>,
}

struct Entry<T> {
    bucket: IpAddr,
    handle: T,
    evicting: bool,
}

/// The open connections.
pub struct ConnTable<T> {
    limits: TableLimits,
    next_id: u64,
    open: HashMap<u64, Entry<T>>,
    per_bucket: HashMap<IpAddr, usize>,
    per_network: HashMap<IpAddr, usize>,
    evicting: usize,
    /// A full table found nothing to evict: none can be before this.
    no_victim_before_ms: u64,
}

/// The IPv6 /48 of an address (IPv4: none).
fn network(ip: IpAddr) -> Option<IpAddr> {
    match bucket(ip) {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(IpAddr::V6(std::net::Ipv6Addr::new(
                s[0], s[1], s[2], 0, 0, 0, 0, 0,
            )))
        }
    }
}

/// The address connections are counted under.
pub fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl<T: Evictable> ConnTable<T> {
    pub fn new(limits: TableLimits) -> Self {
        ConnTable {
            limits,
            next_id: 0,
            open: HashMap::new(),
            per_bucket: HashMap::new(),
            per_network: HashMap::new(),
            evicting: 0,
            no_victim_before_ms: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Connections from `ip`'s bucket.
    pub fn from_address(&self, ip: IpAddr) -> usize {
        self.per_bucket.get(&bucket(ip)).copied().unwrap_or(0)
    }

    /// Admits a connection from `ip` made by `make` (given its id), or
    /// refuses it.
    pub fn admit(
        &mut self,
        ip: IpAddr,
        now_ms: u64,
        make: impl FnOnce(u64) -> T,
    ) -> Result<(Admitted, &T), Refusal> {
        let b = bucket(ip);
        if self.per_bucket.get(&b).copied().unwrap_or(0) >= self.limits.max_per_address {
            return Err(Refusal::PerAddress);
        }
        let net = network(ip);
        if let Some(net) = net {
            let cap = self.limits.max_per_address.saturating_mul(4);
            if self.per_network.get(&net).copied().unwrap_or(0) >= cap {
                return Err(Refusal::PerNetwork);
            }
        }
        let mut evicted = None;
        if self.open.len() >= self.limits.max_connections {
            evicted = Some(self.evict_one(now_ms).ok_or(Refusal::Full)?);
        }
        let id = self.next_id;
        self.next_id += 1;
        *self.per_bucket.entry(b).or_insert(0) += 1;
        if let Some(net) = net {
            *self.per_network.entry(net).or_insert(0) += 1;
        }
        let entry = self.open.entry(id).or_insert(Entry {
            bucket: b,
            handle: make(id),
            evicting: false,
        });
        Ok((Admitted { id, evicted }, &entry.handle))
    }

    /// The connection closed.
    pub fn release(&mut self, id: u64) {
        let Some(e) = self.open.remove(&id) else {
            return;
        };
        if e.evicting {
            self.evicting -= 1;
        }
        if let Some(n) = self.per_bucket.get_mut(&e.bucket) {
            *n -= 1;
            if *n == 0 {
                self.per_bucket.remove(&e.bucket);
            }
        }
        if let Some(net) = network(e.bucket) {
            if let Some(n) = self.per_network.get_mut(&net) {
                *n -= 1;
                if *n == 0 {
                    self.per_network.remove(&net);
                }
            }
        }
    }

    /// Evicts a waiting connection, if any may be: from the address
    /// holding the most, one never served first, the longest waiting first.
    fn evict_one(&mut self, now_ms: u64) -> Option<u64> {
        if self.evicting >= self.limits.max_evicting || now_ms < self.no_victim_before_ms {
            return None;
        }
        let after = self.limits.evict_after_ms;
        let mut soonest = now_ms.saturating_add(after);
        // (most connections on its address first, never served first,
        // longest waiting first, id), id
        type Rank = (std::cmp::Reverse<usize>, bool, u64, u64);
        let mut candidates: Vec<(Rank, u64)> = Vec::new();
        for (id, e) in &self.open {
            if e.evicting {
                continue;
            }
            let Some((since, served)) = e.handle.waiting() else {
                continue;
            };
            if now_ms.saturating_sub(since) < after {
                soonest = soonest.min(since.saturating_add(after));
                continue;
            }
            let from_address = self.per_bucket.get(&e.bucket).copied().unwrap_or(0);
            candidates.push(((std::cmp::Reverse(from_address), served, since, *id), *id));
        }
        candidates.sort_unstable();
        for (_, id) in candidates {
            let e = self.open.get_mut(&id).expect("listed");
            // It may have begun a request since it was listed.
            if e.handle.evict() {
                e.evicting = true;
                self.evicting += 1;
                return Some(id);
            }
        }
        self.no_victim_before_ms = soonest;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[derive(Clone)]
    struct Fake {
        since: Rc<Cell<Option<u64>>>,
        evicted: Rc<Cell<bool>>,
    }

    impl Evictable for Fake {
        fn waiting(&self) -> Option<(u64, bool)> {
            self.since.get().map(|s| (s, false))
        }
        fn evict(&self) -> bool {
            self.evicted.set(true);
            true
        }
    }

    fn fake(since: Option<u64>) -> Fake {
        Fake {
            since: Rc::new(Cell::new(since)),
            evicted: Rc::new(Cell::new(false)),
        }
    }

    const LIMITS: TableLimits = TableLimits {
        max_connections: 4,
        max_per_address: 2,
        max_evicting: 1,
        evict_after_ms: 100,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_gets_its_cap_and_others_still_get_in() {
        let mut t = ConnTable::new(LIMITS);
        let a = ip("10.0.0.1");
        t.admit(a, 0, |_| fake(None)).unwrap();
        t.admit(a, 0, |_| fake(None)).unwrap();
        assert_eq!(
            t.admit(a, 0, |_| fake(None)).err(),
            Some(Refusal::PerAddress)
        );
        t.admit(ip("10.0.0.2"), 0, |_| fake(None)).unwrap();
        assert_eq!(t.from_address(a), 2);
    }

    #[test]
    fn ipv6_counts_per_64() {
        let mut t = ConnTable::new(LIMITS);
        t.admit(ip("2001:db8::1"), 0, |_| fake(None)).unwrap();
        t.admit(ip("2001:db8::2"), 0, |_| fake(None)).unwrap();
        assert_eq!(
            t.admit(ip("2001:db8::ffff:1"), 0, |_| fake(None)).err(),
            Some(Refusal::PerAddress)
        );
        t.admit(ip("2001:db8:0:1::1"), 0, |_| fake(None)).unwrap();
        assert_eq!(t.from_address(ip("::ffff:10.0.0.9")), 0);
    }

    #[test]
    fn a_full_table_evicts_the_longest_waiting_connection_never_a_busy_one() {
        let mut t = ConnTable::new(LIMITS);
        let busy = fake(None);
        let old = fake(Some(10));
        let young = fake(Some(500));
        let (b, o, y) = (busy.clone(), old.clone(), young.clone());
        t.admit(ip("10.0.0.1"), 0, move |_| b).unwrap();
        let (old_id, _) = t.admit(ip("10.0.0.2"), 0, move |_| o).unwrap();
        t.admit(ip("10.0.0.3"), 0, move |_| y).unwrap();
        t.admit(ip("10.0.0.4"), 0, |_| fake(None)).unwrap();
        let (admitted, _) = t.admit(ip("10.0.0.5"), 1_000, |_| fake(None)).unwrap();
        assert_eq!(admitted.evicted, Some(old_id.id));
        assert!(old.evicted.get() && !young.evicted.get() && !busy.evicted.get());
        // One eviction in progress at most: the next is refused until the
        // evicted connection is gone.
        assert_eq!(
            t.admit(ip("10.0.0.6"), 1_000, |_| fake(None)).err(),
            Some(Refusal::Full)
        );
        t.release(old_id.id);
        let (next, _) = t.admit(ip("10.0.0.6"), 1_000, |_| fake(None)).unwrap();
        assert!(next.evicted.is_some(), "the young one goes now");
        assert!(young.evicted.get());
    }

    #[test]
    fn a_full_table_of_busy_or_fresh_connections_refuses() {
        let mut t = ConnTable::new(LIMITS);
        for i in 0..4 {
            let since = if i % 2 == 0 { None } else { Some(950) };
            t.admit(ip(&format!("10.0.0.{i}")), 0, move |_| fake(since))
                .unwrap();
        }
        assert_eq!(
            t.admit(ip("10.0.1.1"), 1_000, |_| fake(None)).err(),
            Some(Refusal::Full),
            "none waited 100 ms"
        );
        // Without a scan until one could have: at 1_050 the waiting ones
        // have waited 100 ms.
        assert_eq!(t.no_victim_before_ms, 1_050);
        t.admit(ip("10.0.1.1"), 1_050, |_| fake(None)).unwrap();
    }

    #[test]
    fn the_address_holding_most_loses_first_and_ipv6_counts_per_48_too() {
        let limits = TableLimits {
            max_connections: 4,
            max_per_address: 3,
            max_evicting: 4,
            evict_after_ms: 0,
        };
        let mut t = ConnTable::new(limits);
        let pooled = fake(Some(0)); // the longest waiting, alone on its address
        let p = pooled.clone();
        t.admit(ip("10.0.0.1"), 0, move |_| p).unwrap();
        let crowd: Vec<Fake> = (0..3).map(|_| fake(Some(500))).collect();
        for f in &crowd {
            let f = f.clone();
            t.admit(ip("10.0.0.2"), 0, move |_| f).unwrap();
        }
        t.admit(ip("10.0.0.3"), 1_000, |_| fake(None)).unwrap();
        assert!(!pooled.evicted.get(), "the crowd's address pays");
        assert_eq!(crowd.iter().filter(|f| f.evicted.get()).count(), 1);
        let mut t = ConnTable::new(TableLimits {
            max_connections: 100,
            max_per_address: 2,
            max_evicting: 1,
            evict_after_ms: 0,
        });
        for i in 0..8 {
            t.admit(ip(&format!("2001:db8:0:{i}::1")), 0, |_| fake(None))
                .unwrap();
        }
        assert_eq!(
            t.admit(ip("2001:db8:0:99::1"), 0, |_| fake(None)).err(),
            Some(Refusal::PerNetwork)
        );
        t.admit(ip("2001:db8:1::1"), 0, |_| fake(None)).unwrap();
    }

    #[test]
    fn release_frees_the_address_and_the_slot() {
        let mut t = ConnTable::new(LIMITS);
        let a = ip("10.0.0.1");
        let (x, _) = t.admit(a, 0, |_| fake(None)).unwrap();
        let (x, y) = (x.id, t.admit(a, 0, |_| fake(None)).unwrap().0.id);
        t.release(x);
        t.release(x);
        assert_eq!(t.from_address(a), 1);
        t.release(y);
        assert_eq!(t.from_address(a), 0);
        assert!(t.is_empty());
    }
}

//! Bytes as a peer session reads them after the hello: frames → validation →
//! the node's real inbound dispatcher over a real store. Panics on a finding
//! (garbage that changed stored data, a hang, an oversized answer, …).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_actors::fuzzing::{peer_request, tally};

fuzz_target!(|data: &[u8]| {
    let r = peer_request(data);
    r.assert_clean();
    tally(
        "peer_request",
        r.garbage,
        u64::from(r.accepted),
        u64::from(r.changed),
    );
});

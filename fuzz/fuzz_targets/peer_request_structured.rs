//! As `peer_request`, with the input driving the structure-aware request
//! generator, so the handlers get well-formed requests with hostile fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_actors::fuzzing::{peer_request_structured, tally};

fuzz_target!(|data: &[u8]| {
    let r = peer_request_structured(data);
    r.assert_clean();
    tally(
        "peer_request_structured",
        r.garbage,
        u64::from(r.accepted),
        u64::from(r.changed),
    );
});

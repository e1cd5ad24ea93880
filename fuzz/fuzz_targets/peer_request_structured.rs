//! As `peer_request`, with the input driving the structure-aware request
//! generator, so the handlers get well-formed requests with hostile fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_fuzz_harness::peer::peer_request_structured;

fuzz_target!(|data: &[u8]| {
    peer_request_structured(data).assert_clean_and_tally("peer_request_structured");
});

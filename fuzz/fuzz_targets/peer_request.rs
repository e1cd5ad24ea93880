//! Bytes as a peer session reads them after the hello: frames → validation →
//! the node's real inbound dispatcher over a real store. Panics on a finding
//! (garbage that changed stored data, a hang, an oversized answer, …).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_fuzz_harness::peer::peer_request;

fuzz_target!(|data: &[u8]| {
    peer_request(data).assert_clean_and_tally("peer_request");
});

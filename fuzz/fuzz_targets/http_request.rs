//! The HTTP request parsing of `src/http/request.rs`: key, consistency level
//! and conditional headers (input layout in `ringkv_fuzz_harness::http`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_fuzz_harness::http::http_request;
use ringkv_fuzz_harness::peer::tally;

fuzz_target!(|data: &[u8]| {
    let r = http_request(data);
    r.assert_clean();
    tally("http_request", r.refusals > 0, u64::from(r.key_accepted), 0);
});

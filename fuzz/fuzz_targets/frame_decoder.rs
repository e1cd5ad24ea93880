//! The peer frame decoder: `data[0]` picks how the rest is chunked; the rest
//! is decoded under every frame limit (see `ringkv_fuzz_harness::peer`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_fuzz_harness::peer::{frame_decoder, tally};

fuzz_target!(|data: &[u8]| {
    let r = frame_decoder(data);
    r.assert_clean();
    tally("frame_decoder", r.frames == 0, r.valid_requests, 0);
});

//! (e) permessage-deflate alone: arbitrary bytes inflated as a client's compressed messages,
//! with and without context takeover, under an 8 KiB limit, and payloads compressed by the
//! server's side and inflated back: see `anyws_fuzz::check_inflate`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| anyws_fuzz::check_inflate(data));

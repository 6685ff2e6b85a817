//! (d) The sans-IO frame reader, alone: arbitrary bytes as a client's side of a connection, read
//! whole, in arbitrary pieces and a byte at a time. No panic, memory bounded by the limits
//! (4 KiB messages, 2 KiB frames), and the same events and close code however the bytes are
//! cut: see `anyws_fuzz::check_ws_reader`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| anyws_fuzz::check_ws_reader(data));

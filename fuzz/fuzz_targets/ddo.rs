//! `cargo fuzz run ddo`: see `tidepool_fuzz::ddo`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool_fuzz::ddo::run(data));

//! `cargo fuzz run signed_request`: see `tidepool_fuzz::request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool_fuzz::request::run(data));

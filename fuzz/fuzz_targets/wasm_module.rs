//! `cargo fuzz run wasm_module`: see `tidepool_fuzz::module`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool_fuzz::module::run(data));

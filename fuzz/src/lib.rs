//! Fuzz targets for the parts of Tidepool that read what strangers send: signed requests (the
//! HTTP layer's envelope and JSON bodies), DDOs (what a consumer reads from a provider before
//! signing), and WebAssembly modules (what the runtime admits and runs).
//!
//! Each target is a function here, called by a one-line `fuzz_target!` in `fuzz_targets/`, so
//! that the seed generator (`examples/seeds.rs`) and any test can call it too. A target calls the
//! same functions the daemon or the client calls, never a copy of them, and panics only when a
//! property the code promises is broken (a forged request accepted, a DDO that does not survive
//! its own round trip, a module that makes the runtime fail on the host's side).
//!
//! How to run them, briefly (README, "Security", for more): `scripts/fuzz.sh --quick` (the test
//! command's bounded run, no coverage instrumentation); `cargo fuzz run -s none TARGET
//! fuzz/corpus/TARGET fuzz/seeds/TARGET` for coverage-guided runs.

pub mod ddo;
pub mod module;
pub mod request;
#[path = "../../runtime/tests/sandbox/smith.rs"]
pub mod smith;

/// The targets, by the name of their binary and seed directory.
pub const TARGETS: &[&str] = &["signed_request", "ddo", "wasm_module"];

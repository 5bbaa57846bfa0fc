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

/// libFuzzer's extra counters (the ELF section it reads besides coverage instrumentation). The
/// quick run's plain build has no instrumentation, and libFuzzer mutates only inputs that set
/// some counter: each target sets one for what its input came to (refused, accepted, an
/// outcome), a crude signal that also keeps the seeds.
#[used]
#[unsafe(link_section = "__libfuzzer_extra_counters")]
static COUNTERS: [std::sync::atomic::AtomicU8; 64] = [const { std::sync::atomic::AtomicU8::new(0) }; 64];

/// Counts an input as having reached `what` (any number; taken modulo the counters).
pub fn reached(what: usize) {
    COUNTERS[what % COUNTERS.len()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

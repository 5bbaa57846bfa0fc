//! The runtime against real guest modules (built from `tests/guests` and `examples/`).
//!
//! * `conformance`: WASI preview 1 behaviour, function by function;
//! * `determinism`: every source of nondeterminism a guest can observe is closed;
//! * `limits`: every limit is an outcome, and the host stays bounded;
//! * `receipts`: receipts, verification and the examples end to end;
//! * `python`: the Python environment: SDK, determinism, limits, examples, verification.
#![allow(clippy::unwrap_used, reason = "test helpers: a failed unwrap is a failed test")]

mod conformance;
mod determinism;
mod limits;
mod python;
mod receipts;
mod util;

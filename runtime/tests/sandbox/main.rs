//! The runtime against real guest modules (built from `tests/guests` and `examples/`).
//!
//! * `conformance`: WASI preview 1 behaviour, function by function;
//! * `determinism`: every source of nondeterminism a guest can observe is closed;
//! * `differential`: the admission pass against the eager engine, on generated and
//!   hand-written modules, and with each of its checks left out;
//! * `limits`: every limit is an outcome, and the host stays bounded;
//! * `receipts`: receipts, verification and the examples end to end;
//! * `python`: the Python environment: SDK, determinism, limits, examples, verification;
//! * `stack`: the wasm-level stack limit.
#![allow(clippy::unwrap_used, reason = "test helpers: a failed unwrap is a failed test")]

mod conformance;
mod determinism;
mod differential;
mod limits;
mod python;
mod receipts;
mod smith;
mod stack;
mod util;

//! The benchmarks: every figure Tidepool promises, each measured against its baseline in the
//! same run and reported as a ratio with its target (see `src/main.rs`, and the README).
//!
//! * [`baseline`]: a minimal embedding of the same wasmtime with stock wasmtime-wasi;
//! * [`figures`]: the measurements, one module per subject;
//! * [`timing`]: medians, percentiles and the result table; [`env`]: scratch space, native
//!   programs, the machine's description.

#![warn(missing_docs)]

pub mod baseline;
pub mod env;
pub mod timing;

/// The measurements, one module per subject; each returns its rows of the table.
pub mod figures {
    pub mod cluster;
    pub mod compile;
    pub mod http;
    pub mod io;
    pub mod jobs;
    pub mod kernels;
    pub mod load;
    pub mod python;
}

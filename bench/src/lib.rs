//! Benchmark support: the baselines Tidepool is measured against, and timing helpers.
//!
//! * [`baseline`]: minimal embeddings of the same wasmtime version with stock wasmtime-wasi,
//!   preview 1 directly and preview 2 behind the preview 1 adapter;
//! * [`timing`]: medians over repeated runs and the result table.

pub mod baseline;
pub mod timing;

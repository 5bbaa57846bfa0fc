//! Does nothing: the trivial module of the overhead benchmarks (it still links Rust's std, so
//! it imports the usual WASI functions).
fn main() {}

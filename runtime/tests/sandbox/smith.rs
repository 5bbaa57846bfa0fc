//! wasm-smith for the runtime: generated modules that use only the proposals the admission pass
//! takes ([`tidepool_runtime::instrument::FEATURES`]), from deterministic bytes. The
//! differential tests and the fuzz targets (`fuzz/src/lib.rs` includes this file) share it.

/// A wasm-smith configuration with the runtime's proposals on and every other off; the
/// module's shape (functions, imports, exports, sizes) is the caller's to set.
pub fn config() -> wasm_smith::Config {
    let mut config = wasm_smith::Config {
        canonicalize_nans: false,
        simd_enabled: true,
        relaxed_simd_enabled: true,
        tail_call_enabled: true,
        // wasm-smith's reference types bring GC-only types with them (its MVP includes them).
        reference_types_enabled: false,
        bulk_memory_enabled: true,
        multi_value_enabled: true,
        saturating_float_to_int_enabled: true,
        sign_extension_ops_enabled: true,
        extended_const_enabled: true,
        ..wasm_smith::Config::default()
    };
    config.gc_enabled = false;
    config.exceptions_enabled = false;
    config.threads_enabled = false;
    config.memory64_enabled = false;
    config.custom_page_sizes_enabled = false;
    config.wide_arithmetic_enabled = false;
    config
}

/// `len` pseudo-random bytes from `seed` (SplitMix64): wasm-smith's input, the same every time.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

use super::*;

#[test]
fn the_configuration_hash_covers_the_settings() {
    let config = RuntimeConfig::default();
    let hash = |c: &RuntimeConfig, semantics, stack| settings::config_hash(&c.spec(semantics, stack));
    let a = hash(&config, Semantics::Legacy, 512 * 1024);
    assert_ne!(a, hash(&config, Semantics::Legacy, 256 * 1024));
    assert_ne!(a, hash(&RuntimeConfig { fuel_metering: false, ..config.clone() }, Semantics::Legacy, 512 * 1024));
    assert_ne!(a, hash(&config, Semantics::V2, 512 * 1024));
    let v2 = hash(&config, Semantics::V2, 1000);
    assert_eq!(v2, hash(&config, Semantics::V2, 2000), "the stack limit is in the receipt's limits, not here");
    assert_ne!(v2, hash(&RuntimeConfig { nan_canonicalization: false, ..config.clone() }, Semantics::V2, 1000));
}

/// `WASMTIME_VERSION` is recorded in receipts: it must be the version actually built.
#[test]
fn the_wasmtime_version_is_the_locked_one() {
    let lock = include_str!("../../../Cargo.lock");
    let locked = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"wasmtime\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"'));
    assert_eq!(locked, Some(WASMTIME_VERSION));
}

#[test]
fn headers_are_checked_before_compiling() {
    assert!(matches!(check_header(b"hello world"), Err(Error::InvalidModule { .. })));
    assert!(
        matches!(check_header(b"\0asm\x0d\0\x01\0"), Err(Error::InvalidModule { reason }) if reason.contains("component"))
    );
    assert!(check_header(b"\0asm\x01\0\0\0").is_ok());
}

#[test]
fn the_cache_evicts_the_least_recently_used() {
    let config = RuntimeConfig { memory_cache_entries: 2, ..Default::default() };
    let engine = EngineState::new(config.spec(Semantics::V2, 10_000), &config).unwrap();
    let wat = |n: u32| {
        wat::parse_str(format!(r#"(module (memory (export "memory") 1) (func (export "_start") i32.const {n} drop))"#))
            .unwrap()
    };
    let hashes: Vec<B256> = (0..3).map(|n| crate::tree::blake3_b256(&wat(n))).collect();
    engine.compile(hashes[0], &wat(0)).unwrap();
    engine.compile(hashes[1], &wat(1)).unwrap();
    assert!(engine.compile(hashes[0], &wat(0)).unwrap().1, "hit");
    engine.compile(hashes[2], &wat(2)).unwrap();
    let cache = engine.cache.lock().unwrap();
    assert!(cache.modules.contains_key(&hashes[0]) && !cache.modules.contains_key(&hashes[1]));
}

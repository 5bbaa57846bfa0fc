//! Determinism: the same algorithm on the same inputs under the same limits gives the same
//! receipt, whatever the host does differently. Each source of nondeterminism a guest could
//! observe gets a test here (the `observe` guest prints all of them).

use std::path::Path;
use std::time::{Duration, SystemTime};

use alloy_primitives::B256;
use tidepool_runtime::{Outcome, Receipt, Runtime, RuntimeConfig};

use crate::util::{Opts, guest, run, run_alg, runtime};

/// The same dataset, created on the host in the given order, with the given mtime.
pub(crate) fn host_dataset(parent: &Path, reversed: bool, mtime: SystemTime) -> std::path::PathBuf {
    let root = parent.join("data");
    let mut files = vec![("b.txt", "bee"), ("a.txt", "ay"), ("sub/c.txt", "sea"), ("sub/deeper/d.txt", "dee")];
    if reversed {
        files.reverse();
    }
    std::fs::create_dir_all(root.join("z/empty")).unwrap();
    for (path, contents) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        std::fs::File::options().write(true).open(&p).unwrap().set_modified(mtime).unwrap();
    }
    root
}

fn without_meta(r: &Receipt) -> Receipt {
    Receipt { meta: None, ..r.clone() }
}

#[test]
fn identical_receipts_whatever_the_host_does() {
    let (t1, t2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d1 = host_dataset(t1.path(), false, SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000));
    // Another creation order, other host timestamps, other inode numbers, another path.
    let d2 = host_dataset(&t2.path().join("elsewhere"), true, SystemTime::now());
    let a = run("observe", &Opts::default().input("data", &d1));
    let b = run("observe", &Opts::default().input("data", &d2));
    // A fresh runtime: a new engine, nothing cached.
    let fresh = Runtime::new(RuntimeConfig::default());
    let spec = Opts::default().input("data", &d1).spec(guest("observe"), &t1.path().join("out"));
    let c = fresh.run(&spec).unwrap();
    a.assert_success();
    assert_eq!(a.stdout(), b.stdout(), "the guest saw a different world");
    assert_eq!(a.result.stdout, c.stdout);
    assert_eq!(without_meta(&a.result.receipt), without_meta(&b.result.receipt));
    assert_eq!(without_meta(&a.result.receipt), without_meta(&c.receipt));
    assert!(a.result.receipt.deterministic);
    assert!(!c.compile_cached, "the fresh runtime compiled the module itself");
}

#[test]
fn timestamps_inodes_and_listing_order_are_virtual() {
    let t = tempfile::tempdir().unwrap();
    let d = host_dataset(t.path(), true, SystemTime::now());
    let out = run("observe", &Opts::default().input("data", &d));
    let entries: Vec<&str> = out
        .result
        .stdout
        .split(|&b| b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter(|l| l.starts_with("entry /data/inputs/data/"))
        .collect();
    let names: Vec<&str> = entries.iter().map(|l| l.split(' ').nth(1).unwrap()).collect();
    assert_eq!(
        names,
        [
            "/data/inputs/data/.",
            "/data/inputs/data/..",
            "/data/inputs/data/a.txt",
            "/data/inputs/data/b.txt",
            "/data/inputs/data/sub",
            "/data/inputs/data/sub/.",
            "/data/inputs/data/sub/..",
            "/data/inputs/data/sub/c.txt",
            "/data/inputs/data/sub/deeper",
            "/data/inputs/data/sub/deeper/.",
            "/data/inputs/data/sub/deeper/..",
            "/data/inputs/data/sub/deeper/d.txt",
            "/data/inputs/data/z",
            "/data/inputs/data/z/.",
            "/data/inputs/data/z/..",
            "/data/inputs/data/z/empty",
            "/data/inputs/data/z/empty/.",
            "/data/inputs/data/z/empty/..",
        ],
        "sorted listings, whatever order the host created them in"
    );
    for line in &entries {
        for t in ["atim", "mtim", "ctim"] {
            assert!(line.contains(&format!("{t}=1735689600000000000")), "host time leaked: {line}");
        }
        let field =
            |name: &str| line.split(' ').find_map(|f| f.strip_prefix(&format!("{name}=")).map(String::from)).unwrap();
        if !line.contains("/.. ") {
            // (The guest stats `..` through the directory itself: it cannot climb out of it.)
            assert_eq!(field("d_ino"), field("ino"), "readdir and stat agree: {line}");
        }
        assert!(field("ino").parse::<u64>().unwrap() < 100, "inodes are small counters, not host inodes: {line}");
    }
}

#[test]
fn the_seed_is_the_only_source_of_randomness() {
    let seed = |b: u8| Opts { seed: Some(B256::repeat_byte(b)), ..Opts::default() };
    let (a, b, c) = (run("observe", &seed(1)), run("observe", &seed(1)), run("observe", &seed(2)));
    let random = |s: &str| s.lines().find(|l| l.starts_with("random ")).unwrap().to_string();
    assert_eq!(a.stdout(), b.stdout());
    assert_ne!(random(&a.stdout()), random(&c.stdout()), "another seed, other random bytes");
    assert_eq!(a.result.receipt.seed, B256::repeat_byte(1));
    assert_ne!(a.result.receipt.receipt_hash, c.result.receipt.receipt_hash, "the seed is part of the receipt");
    // Without a seed, one is derived from the job itself: still reproducible.
    let (d, e) = (run("observe", &Opts::default()), run("observe", &Opts::default()));
    assert_eq!(d.result.receipt.seed, e.result.receipt.seed);
    assert_eq!(random(&d.stdout()), random(&e.stdout()));
}

#[test]
fn clocks_are_virtual_and_sleeping_does_not_wait() {
    let out = run("observe", &Opts::default());
    out.assert_success();
    let realtime: u64 = out.stdout().lines().find_map(|l| l.strip_prefix("clock realtime ")).unwrap().parse().unwrap();
    // The clock starts at 2025-01-01 and has advanced by the work done (1 ns per unit of fuel).
    assert!(realtime >= 1_735_689_600_000_000_000);
    assert!(realtime - 1_735_689_600_000_000_000 <= out.result.receipt.fuel_consumed);
    // An hour of sleep under a 30-second timeout: only possible if sleeping is virtual.
    let slept = run("misbehave", &Opts::default().args(&["sleep"]).limits(|l| l.timeout_ms = 30_000));
    slept.assert_success();
    assert_eq!(slept.stdout(), "slept an hour\n");
    // Busy-waiting on the clock ends, because the clock advances with work.
    let spun = run("misbehave", &Opts::default().args(&["clock-spin"]));
    spun.assert_success();
    let spun_again = run("misbehave", &Opts::default().args(&["clock-spin"]));
    assert_eq!(spun.stdout(), spun_again.stdout(), "the same number of spins every time");
}

#[test]
fn nan_bit_patterns_are_canonical() {
    let out = run("observe", &Opts::default());
    out.assert_success();
    let s = out.stdout();
    for (what, bits) in [
        ("nan f32 0/0", "0x7fc00000"),
        ("nan f64 0/0", "0x7ff8000000000000"),
        ("nan f32 sqrt(-1)", "0x7fc00000"),
        ("nan f32 odd+1", "0x7fc00000"),
        ("nan f64 odd*2", "0x7ff8000000000000"),
        ("nan f64 -(0/0)", "0x7ff8000000000000"),
    ] {
        assert!(s.contains(&format!("{what} {bits}\n")), "{what} is not canonical:\n{s}");
    }
}

#[test]
fn relaxed_simd_takes_its_deterministic_semantics() {
    let out = run("observe", &Opts::default());
    out.assert_success();
    let s = out.stdout();
    // The deterministic profile of the relaxed SIMD proposal, computed by hand:
    for line in [
        // fused: (1+2^-12)^2 - (1+2^-11) = 2^-24 exactly; unfused rounding would give 0.
        "relaxed madd [33800000, 40a00000, 41200000, 00000000]",
        // saturating truncation: NaN -> 0, out of range -> MIN/MAX.
        "relaxed trunc [00000000, 7fffffff, 80000000, ffffffff]",
        // out-of-range indices select 0.
        "relaxed swizzle [0d0c0b0a, 00000000, 11100f0e, 15141312]",
        // wasm min/max: -0 < +0, NaN propagates (canonically).
        "relaxed min [80000000, 7fc00000, 7fc00000, 80000000]",
        "relaxed max [00000000, 7fc00000, 7fc00000, 00000000]",
        // bitselect.
        "relaxed laneselect [1111aaaa, bbbbbbbb, 33333333, d4d4d4d4]",
        // saturating rounding Q15 multiply.
        "relaxed q15mulr [7fff7fff, 20002000, 00000000, 00000000]",
        // both operands signed, i16 sums wrap.
        "relaxed dot [00027f01, 0c354e20, 80008000, 00190005]",
    ] {
        assert!(s.contains(&format!("{line}\n")), "expected `{line}` in:\n{s}");
    }
}

#[test]
fn memory_growth_is_refused_at_the_same_page() {
    for (limit, pages) in [(4u64 << 20, 64), (8 << 20, 128)] {
        let opts = Opts::default().args(&["memory"]).limits(|l| l.memory_bytes = limit);
        let (a, b) = (run("observe", &opts), run("observe", &opts));
        a.assert_success();
        assert_eq!(a.stdout(), format!("memory refused after {pages} pages\n"));
        assert_eq!(without_meta(&a.result.receipt), without_meta(&b.result.receipt));
    }
}

#[test]
fn stack_overflow_happens_at_the_same_depth() {
    let opts = Opts::default().args(&["stack"]);
    let a = run("observe", &opts);
    let b = run_alg(guest("observe"), &opts);
    let Outcome::Trap { message } = a.outcome() else { panic!("expected a trap, got {}", a.outcome()) };
    assert!(message.contains("stack"), "{message}");
    assert_eq!(a.stdout(), b.stdout());
    assert_eq!(a.result.receipt.fuel_consumed, b.result.receipt.fuel_consumed);
    let depth = |r: &crate::util::Ran| r.stdout().lines().last().unwrap().parse::<u64>().unwrap();
    let small = run("observe", &opts.clone().limits(|l| l.max_wasm_stack = 128 * 1024));
    assert!(depth(&small) < depth(&a), "a smaller stack overflows sooner");
    assert_ne!(
        small.result.receipt.runtime.engine_config_hash, a.result.receipt.runtime.engine_config_hash,
        "the stack limit is part of the engine configuration"
    );
}

#[test]
fn threads_and_shared_memory_are_refused_before_running() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = wat::parse_str(r#"(module (memory (export "memory") 1 1 shared) (func (export "_start")))"#).unwrap();
    let algorithm = tidepool_runtime::Algorithm::new("threads", shared);
    let err = runtime().run(&Opts::default().spec(algorithm, &tmp.path().join("out"))).unwrap_err();
    assert!(matches!(err, tidepool_runtime::Error::InvalidModule { .. }), "{err}");
}

/// Instance slots are reused from job to job:
/// every job must still start from the module's own initial memory, globals and tables.
#[test]
fn a_reused_instance_slot_starts_from_the_initial_state() {
    let wasm = wat::parse_str(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 2)
          (data (i32.const 16) "A")
          (global $g (mut i32) (i32.const 7))
          (table 2 funcref)
          (elem (i32.const 0) $one)
          (type $ret (func (result i32)))
          (func $one (result i32) i32.const 1)
          (func (export "_start")
            ;; What this job sees: image byte, zero byte, global, memory size, table entry.
            (i32.store8 (i32.const 100) (i32.load8_u (i32.const 16)))
            (i32.store8 (i32.const 101) (i32.add (i32.const 48) (i32.load8_u (i32.const 70000))))
            (i32.store8 (i32.const 102) (i32.add (i32.const 48) (global.get $g)))
            (i32.store8 (i32.const 103) (i32.add (i32.const 48) (memory.size)))
            (i32.store8 (i32.const 104) (i32.add (i32.const 48) (call_indirect (type $ret) (i32.const 0))))
            (i32.store8 (i32.const 105) (i32.const 10))
            (i32.store (i32.const 200) (i32.const 100))
            (i32.store (i32.const 204) (i32.const 6))
            (drop (call $fd_write (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 300)))
            ;; Leave everything dirty for whoever gets the slot next.
            (i32.store8 (i32.const 16) (i32.const 90))
            (i32.store8 (i32.const 70000) (i32.const 9))
            (global.set $g (i32.const 1))
            (drop (memory.grow (i32.const 3)))
            (i32.store8 (i32.const 200000) (i32.const 5))
            (table.set (i32.const 0) (ref.null func))))"#,
    )
    .unwrap();
    let runtime = Runtime::new(RuntimeConfig { max_instances: 1, ..RuntimeConfig::default() });
    let tmp = tempfile::tempdir().unwrap();
    for n in 0..3 {
        let spec = Opts::default()
            .spec(tidepool_runtime::Algorithm::new("dirty", wasm.clone()), &tmp.path().join(format!("out{n}")));
        let result = runtime.run(&spec).unwrap();
        assert!(result.receipt.outcome.is_success(), "run {n}: {}", result.receipt.outcome);
        assert_eq!(String::from_utf8_lossy(&result.stdout), "A0721\n", "run {n} saw a previous job's state");
    }
}

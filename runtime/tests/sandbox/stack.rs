//! The stack limit in wasm terms (issue 14): a recursion stops at a depth that depends on the
//! wasm only, with the same fuel, whatever the native stack and the CPU features; and the
//! native stack is sized so that the wasm-level limit is always reached first, even for frames
//! built to be as large as possible per stack unit, with a native backstop half the configured
//! one (the margin the argument in `runtime/src/instrument/stack.rs` claims).

use tidepool_runtime::instrument::stack::STACK_TRAP_MESSAGE;
use tidepool_runtime::{Algorithm, CpuFeatures, Outcome, Runtime, RuntimeConfig};

use crate::util::{Opts, guest, run};

fn depth(stdout: &str) -> u64 {
    stdout.lines().last().and_then(|l| l.parse().ok()).expect("the guest printed its depth")
}

#[test]
fn recursion_stops_at_the_wasm_level_limit_whatever_the_native_stack_and_cpu() {
    let opts = Opts::default().args(&["stack"]);
    let base = run("observe", &opts);
    assert_eq!(base.outcome(), &Outcome::Trap { message: STACK_TRAP_MESSAGE.into() });
    let tmp = tempfile::tempdir().unwrap();
    for (n, config) in [
        RuntimeConfig { native_stack_divisor: 2, ..RuntimeConfig::default() },
        RuntimeConfig { cpu_features: CpuFeatures::Baseline, ..RuntimeConfig::default() },
    ]
    .into_iter()
    .enumerate()
    {
        let what = format!("{config:?}");
        let other = Runtime::new(config).run(&opts.spec(guest("observe"), &tmp.path().join(n.to_string()))).unwrap();
        assert_eq!(other.receipt.outcome, base.result.receipt.outcome, "{what}");
        assert_eq!(other.stdout, base.result.stdout, "the same depth: {what}");
        assert_eq!(other.receipt.fuel_consumed, base.result.receipt.fuel_consumed, "{what}");
        assert_eq!(other.receipt.receipt_hash, base.result.receipt.receipt_hash, "{what}");
    }
    let small = run("observe", &opts.clone().limits(|l| l.max_stack_height /= 4));
    assert!(depth(&small.stdout()) < depth(&base.stdout()), "a smaller limit stops sooner");
    assert_eq!(
        small.result.receipt.runtime.engine_config_hash, base.result.receipt.runtime.engine_config_hash,
        "the limit is in the receipt's limits, not in the engine's identity"
    );
}

/// Frames with as much native data per stack unit as we could build: many live locals of each
/// type, a deep operand stack held across the recursive call, v128 values, many arguments.
const WORST_FRAMES: &[(&str, &str)] = &[
    (
        "many live f64 and v128 locals",
        r#"(func $r (param $n i32) (result f64)
             (local $a f64) (local $b f64) (local $c f64) (local $d f64) (local $e f64) (local $f f64)
             (local $v v128) (local $w v128) (local $x v128)
             (local.set $a (f64.convert_i32_s (local.get $n)))
             (local.set $b (f64.mul (local.get $a) (f64.const 1.5)))
             (local.set $c (f64.add (local.get $b) (local.get $a)))
             (local.set $d (f64.sqrt (local.get $c)))
             (local.set $e (f64.div (local.get $d) (local.get $b)))
             (local.set $f (f64.sub (local.get $e) (local.get $c)))
             (local.set $v (f64x2.splat (local.get $f)))
             (local.set $w (f32x4.splat (f32.demote_f64 (local.get $e))))
             (local.set $x (i32x4.splat (local.get $n)))
             (f64.add
               (f64.add (f64.add (local.get $a) (local.get $b)) (f64.add (local.get $c) (local.get $d)))
               (f64.add
                 (f64.add (local.get $e) (local.get $f))
                 (f64.add
                   (f64x2.extract_lane 0 (f64x2.add (local.get $v) (f64x2.convert_low_i32x4_s (local.get $x))))
                   (f64.add
                     (f64.promote_f32 (f32x4.extract_lane 1 (local.get $w)))
                     (call $r (i32.add (local.get $n) (i32.const 1))))))))"#,
    ),
    (
        "a deep operand stack held across the call",
        r#"(func $r (param $n i32) (result f64)
             (f64.convert_i32_s (local.get $n)) (f64.const 2) (f64.const 3) (f64.const 4)
             (f64.const 5) (f64.const 6) (f64.const 7) (f64.const 8) (f64.const 9)
             (v128.const i64x2 1 2) (v128.const i64x2 3 4)
             (call $r (i32.add (local.get $n) (i32.const 1)))
             (f64x2.splat) (f64x2.add) (f64x2.add) (f64x2.extract_lane 1)
             (f64.add) (f64.add) (f64.add) (f64.add) (f64.add) (f64.add) (f64.add) (f64.add) (f64.add))"#,
    ),
    (
        "many arguments",
        r#"(func $r (param $n i32) (param f64 f64 f64 f64 f64 f64 f64 f64 f64 f64 f64 f64 v128 v128 v128 v128)
             (result f64)
             (f64.add (local.get 1)
               (call $r (i32.add (local.get $n) (i32.const 1))
                 (local.get 2) (local.get 3) (local.get 4) (local.get 5) (local.get 6) (local.get 7)
                 (local.get 8) (local.get 9) (local.get 10) (local.get 11) (local.get 12) (local.get 1)
                 (local.get 14) (local.get 15) (local.get 16) (local.get 13))))"#,
    ),
];

#[test]
fn the_wasm_level_limit_is_reached_before_the_native_one() {
    let runtime = Runtime::new(RuntimeConfig { native_stack_divisor: 2, ..RuntimeConfig::default() });
    let tmp = tempfile::tempdir().unwrap();
    for (n, (what, func)) in WORST_FRAMES.iter().enumerate() {
        let many = func.contains("param f64 f64");
        let call = if many {
            "(call $r (i32.const 0) (f64.const 0) (f64.const 0) (f64.const 0) (f64.const 0) (f64.const 0) \
             (f64.const 0) (f64.const 0) (f64.const 0) (f64.const 0) (f64.const 0) (f64.const 0) (f64.const 0) \
             (v128.const i64x2 0 0) (v128.const i64x2 0 0) (v128.const i64x2 0 0) (v128.const i64x2 0 0))"
        } else {
            "(call $r (i32.const 0))"
        };
        let wat = format!(r#"(module (memory (export "memory") 1) {func} (func (export "_start") (drop {call})))"#);
        for height in [2_000, 100_000] {
            let spec = Opts::default().limits(|l| l.max_stack_height = height).spec(
                Algorithm::new("frames", wat::parse_str(&wat).unwrap()),
                &tmp.path().join(format!("{n}-{height}")),
            );
            let result = runtime.run(&spec).unwrap();
            assert_eq!(
                result.receipt.outcome,
                Outcome::Trap { message: STACK_TRAP_MESSAGE.into() },
                "{what}, {height} units: the native backstop was reached first"
            );
        }
    }
}

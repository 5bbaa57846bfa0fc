//! Limits: every limit hit is an outcome in the receipt, never a host crash, and the host's
//! memory and disk stay bounded whatever the guest does. Modules the sandbox cannot run are
//! refused before execution with an error naming the problem.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tidepool_runtime::{Algorithm, Error, Outcome, Runtime, RuntimeConfig};

use crate::util::{Opts, run, runtime};

fn misbehave(mode: &[&str], limits: impl FnOnce(&mut tidepool_runtime::Limits)) -> crate::util::Ran {
    let mut args = mode.to_vec();
    args.retain(|a| !a.is_empty());
    run("misbehave", &Opts::default().args(&args).limits(limits))
}

/// Total bytes and number of files under `dir`, from the host's point of view.
fn disk_usage(dir: &std::path::Path) -> (u64, u64) {
    let tree = tidepool_runtime::tree::scan(dir).unwrap();
    let (files, bytes) = tree.file_stats();
    (bytes, files)
}

#[test]
fn fuel_exhaustion_is_deterministic() {
    let a = misbehave(&["spin"], |l| l.fuel = 5_000_000);
    let b = misbehave(&["spin"], |l| l.fuel = 5_000_000);
    assert_eq!(a.outcome(), &Outcome::OutOfFuel);
    assert_eq!(a.result.receipt.fuel_consumed, 5_000_000, "all the fuel, exactly");
    assert!(a.result.receipt.deterministic);
    assert_eq!(a.result.receipt.receipt_hash, b.result.receipt.receipt_hash);
}

#[test]
fn the_wall_clock_timeout_stops_an_endless_loop() {
    let r = misbehave(&["spin"], |l| {
        l.timeout_ms = 300;
        l.fuel = u64::MAX / 2;
    });
    assert_eq!(r.outcome(), &Outcome::Timeout);
    assert!(!r.result.receipt.deterministic, "a timeout depends on the machine");
    assert!(r.result.receipt.hash_is_consistent());
}

/// A loop that only loads, never stores and never calls is stopped at its wall-clock limit
/// too: the compiler must not reuse the interrupt check's load of an earlier check (as it
/// may a plain load when nothing between them stores). With the fuel it has, the loop would
/// run for minutes.
#[test]
fn the_wall_clock_timeout_stops_a_loop_that_never_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let spin = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "_start") (loop $l (br_if $l (i32.eqz (i32.load (i32.const 0)))))))"#,
    )
    .unwrap();
    let spec = Opts::default()
        .limits(|l| {
            l.timeout_ms = 300;
            l.fuel = 200_000_000_000;
        })
        .spec(Algorithm::new("spin", spin), &tmp.path().join("out"));
    let started = std::time::Instant::now();
    let outcome = runtime().run(&spec).unwrap().receipt.outcome;
    assert_eq!(outcome, Outcome::Timeout, "after {:?}", started.elapsed());
}

/// The largest fuel limit is metered exactly (a job uses what it uses, not the limit's excess
/// over the counter's range), and one past it is refused before anything runs.
#[test]
fn the_largest_fuel_limit_is_metered_exactly_and_a_larger_one_refused() {
    let small = misbehave(&["exit", "0"], |_| {});
    let largest = misbehave(&["exit", "0"], |l| l.fuel = tidepool_runtime::Limits::MAX_FUEL);
    assert_eq!(largest.outcome(), &Outcome::Exited { code: 0 });
    assert_eq!(largest.result.receipt.fuel_consumed, small.result.receipt.fuel_consumed);
    let tmp = tempfile::tempdir().unwrap();
    let spec = Opts::default()
        .limits(|l| l.fuel = tidepool_runtime::Limits::MAX_FUEL + 1)
        .spec(crate::util::guest("misbehave"), &tmp.path().join("out"));
    let err = runtime().run(&spec).unwrap_err();
    assert!(matches!(err, Error::InvalidLimits { .. }), "{err}");
}

#[test]
fn memory_bombs_hit_the_memory_limit() {
    let r = misbehave(&["alloc"], |l| l.memory_bytes = 16 << 20);
    assert_eq!(r.outcome(), &Outcome::MemoryLimit, "stderr: {}", r.stderr());
    // A module whose initial memory is over the limit never starts.
    let tmp = tempfile::tempdir().unwrap();
    let big = wat::parse_str(r#"(module (memory (export "memory") 100) (func (export "_start")))"#).unwrap();
    let spec =
        Opts::default().limits(|l| l.memory_bytes = 1 << 20).spec(Algorithm::new("big", big), &tmp.path().join("out"));
    assert_eq!(runtime().run(&spec).unwrap().receipt.outcome, Outcome::MemoryLimit);
}

#[test]
fn an_endless_writer_is_stopped_at_the_output_quota() {
    let quota = 1 << 20;
    let r = misbehave(&["file"], |l| l.output_bytes = quota);
    assert_eq!(r.outcome(), &Outcome::OutputQuota);
    let (bytes, files) = disk_usage(&r.outputs());
    assert_eq!(files, 1);
    assert!(bytes <= quota, "{bytes} bytes on disk for a {quota}-byte quota");
    assert_eq!(bytes, quota, "64 KiB writes fill a 1 MiB quota exactly before the crossing write");
    // Nothing is left behind beside the outputs (the scratch directory is removed).
    let leftovers: Vec<_> = std::fs::read_dir(r.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("out")]);
}

#[test]
fn sparse_growth_counts_against_the_quota() {
    let r = misbehave(&["sparse"], |l| l.output_bytes = 1 << 30);
    assert_eq!(r.outcome(), &Outcome::OutputQuota, "a 1 TiB sparse file must not be allowed");
    assert_eq!(disk_usage(&r.outputs()), (0, 1));
}

#[test]
fn creating_files_forever_hits_the_file_quota() {
    let r = misbehave(&["files"], |l| l.output_files = 50);
    assert_eq!(r.outcome(), &Outcome::OutputQuota);
    assert_eq!(disk_usage(&r.outputs()).1, 50);
}

#[test]
fn stdout_floods_are_capped_and_counted() {
    let r = misbehave(&["stdout"], |l| {
        l.stdout_bytes = 4096;
        l.fuel = 20_000_000;
    });
    assert_eq!(r.outcome(), &Outcome::OutOfFuel);
    assert_eq!(r.result.stdout.len(), 4096, "only the cap is kept in host memory");
    assert!(r.result.receipt.stdout_len > 1_000_000, "the rest is counted: {}", r.result.receipt.stdout_len);
}

#[test]
fn exits_traps_and_panics_are_outcomes() {
    assert_eq!(misbehave(&["exit", "3"], |_| {}).outcome(), &Outcome::Exited { code: 3 });
    assert_eq!(misbehave(&["exit", "0"], |_| {}).outcome(), &Outcome::Exited { code: 0 });
    let panicked = misbehave(&["panic"], |_| {});
    assert!(matches!(panicked.outcome(), Outcome::Trap { message } if message.contains("unreachable")));
    assert!(panicked.stderr().contains("the algorithm gave up"));
    let oob = misbehave(&["oob"], |_| {});
    assert!(
        matches!(oob.outcome(), Outcome::Trap { message } if message.contains("out of bounds")),
        "{}",
        oob.outcome()
    );
}

/// A stopped guest's raised interrupt floor does not outlive it: the next job in the same
/// instance slot (one slot, so the same one) runs to its end.
#[test]
fn the_next_job_in_a_timed_out_jobs_slot_runs_to_its_end() {
    let runtime = Runtime::new(RuntimeConfig { max_instances: 1, ..RuntimeConfig::default() });
    let tmp = tempfile::tempdir().unwrap();
    let guest = || crate::util::guest("misbehave");
    let timed = Opts::default()
        .args(&["spin"])
        .limits(|l| {
            l.timeout_ms = 200;
            l.fuel = u64::MAX / 2;
        })
        .spec(guest(), &tmp.path().join("a"));
    assert_eq!(runtime.run(&timed).unwrap().receipt.outcome, Outcome::Timeout);
    for (i, args) in [["exit", "0"], ["exit", "3"]].iter().enumerate() {
        let next = Opts::default().args(args).spec(guest(), &tmp.path().join(format!("b{i}")));
        let code = args[1].parse().unwrap();
        assert_eq!(runtime.run(&next).unwrap().receipt.outcome, Outcome::Exited { code });
    }
}

#[test]
fn a_running_job_can_be_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Opts::default()
        .args(&["spin"])
        .limits(|l| l.fuel = u64::MAX / 2)
        .spec(crate::util::guest("misbehave"), &tmp.path().join("out"));
    let cancel = Arc::new(AtomicBool::new(false));
    spec.cancel = Some(cancel.clone());
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        cancel.store(true, Ordering::Relaxed);
    });
    let result = runtime().run(&spec).unwrap();
    stopper.join().unwrap();
    assert_eq!(result.receipt.outcome, Outcome::Stopped);
    assert!(!result.receipt.deterministic);
    assert!(result.receipt.fuel_consumed > 0, "the fuel used before the stop is recorded");
}

fn refused(bytes: Vec<u8>, limits: impl FnOnce(&mut tidepool_runtime::Limits)) -> Error {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Opts::default().limits(limits).spec(Algorithm::new("m", bytes), &tmp.path().join("out"));
    let err = runtime().run(&spec).expect_err("the module must be refused");
    assert!(!tmp.path().join("out").exists(), "nothing is created for a refused module");
    err
}

#[test]
fn modules_are_admitted_before_they_run() {
    let wat = |s: &str| wat::parse_str(s).unwrap();
    let err = refused(
        wat(r#"(module (import "env" "now" (func)) (memory (export "memory") 1) (func (export "_start")))"#),
        |_| {},
    );
    assert!(matches!(&err, Error::ForbiddenImport { module, name } if module == "env" && name == "now"), "{err}");
    assert!(err.to_string().contains("env::now"));
    let err = refused(
        wat(
            r#"(module (import "wasi_snapshot_preview1" "sock_open" (func)) (memory (export "memory") 1) (func (export "_start")))"#,
        ),
        |_| {},
    );
    assert!(matches!(&err, Error::ForbiddenImport { name, .. } if name == "sock_open"), "{err}");
    let err = refused(
        wat(
            r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i64))) (memory (export "memory") 1) (func (export "_start")))"#,
        ),
        |_| {},
    );
    assert!(matches!(err, Error::InvalidModule { .. }), "a wrong signature: {err}");
    let err = refused(wat(r#"(module (memory (export "memory") 1) (func (export "run")))"#), |_| {});
    assert!(err.to_string().contains("_start"), "{err}");
    let err = refused(wat(r#"(module (func (export "_start")))"#), |_| {});
    assert!(err.to_string().contains("memory"), "{err}");
    assert!(matches!(refused(b"not wasm at all".to_vec(), |_| {}), Error::InvalidModule { .. }));
    let err = refused(b"\0asm\x0d\0\x01\0rest".to_vec(), |_| {});
    assert!(err.to_string().contains("component"), "{err}");
    let truncated = wat(r#"(module (memory (export "memory") 1) (func (export "_start")))"#);
    assert!(matches!(refused(truncated[..truncated.len() - 3].to_vec(), |_| {}), Error::InvalidModule { .. }));
    let err =
        refused(wat(r#"(module (memory (export "memory") 1) (func (export "_start")))"#), |l| l.module_bytes = 10);
    assert!(matches!(err, Error::ModuleTooLarge { limit: 10, .. }), "{err}");
}

/// A module of a million empty functions (about 5 MB) is refused from its function count,
/// before compiling, which would take minutes and gigabytes; the most allowed still runs.
#[test]
fn a_module_with_a_million_functions_is_refused_before_compiling() {
    use tidepool_runtime::engine::MAX_FUNCTIONS;
    let many = tidepool_test_artifacts::module_with_functions(1_000_000);
    let err = refused(many, |_| {});
    assert!(matches!(&err, Error::InvalidModule { reason } if reason.contains("1000000 functions")), "{err}");
    let err = refused(tidepool_test_artifacts::module_with_functions(MAX_FUNCTIONS + 1), |_| {});
    assert!(err.to_string().contains(&format!("at most {MAX_FUNCTIONS}")), "{err}");
    // Well-formed all along: with few functions, the same module runs.
    let tmp = tempfile::tempdir().unwrap();
    let spec = Opts::default()
        .spec(Algorithm::new("m", tidepool_test_artifacts::module_with_functions(3)), &tmp.path().join("out"));
    assert_eq!(runtime().run(&spec).unwrap().receipt.outcome, Outcome::Exited { code: 0 });
}

/// Table limits refuse a module before it runs, and the same way whether instances come from
/// the pool or are mapped per job: otherwise two hosts with one engine configuration hash would
/// treat it differently (one refusing it, the other running it into a failed receipt).
#[test]
fn table_limits_refuse_a_module_alike_with_and_without_instance_pooling() {
    let tables = |n: usize, min: u64| {
        let defs: String = (0..n).map(|_| format!("(table {min} funcref)")).collect();
        wat::parse_str(format!(r#"(module {defs} (memory (export "memory") 1) (func (export "_start")))"#)).unwrap()
    };
    for max_instances in [0, 2] {
        let runtime = Runtime::new(RuntimeConfig { max_instances, ..RuntimeConfig::default() });
        let tmp = tempfile::tempdir().unwrap();
        let run = |bytes: Vec<u8>, out: &str| {
            runtime.run(&Opts::default().spec(Algorithm::new("m", bytes), &tmp.path().join(out)))
        };
        for (bytes, what) in [(tables(5, 1), "five tables"), (tables(1, 1_000_001), "a table over the element limit")] {
            let err = run(bytes, "refused").expect_err(what);
            assert!(matches!(err, Error::InvalidModule { .. }), "{what}, max_instances {max_instances}: {err}");
        }
        let ran = run(tables(4, 1_000_000), "admitted").unwrap();
        assert_eq!(ran.receipt.outcome, Outcome::Exited { code: 0 }, "max_instances {max_instances}");
    }
}

#[test]
fn bad_jobs_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let alg = crate::util::guest("misbehave");
    let run_spec = |opts: Opts, out: &str| runtime().run(&opts.spec(alg.clone(), &tmp.path().join(out))).unwrap_err();
    let missing = run_spec(Opts::default().input("data", &tmp.path().join("nope")), "o1");
    assert!(matches!(&missing, Error::InvalidInput { name, .. } if name == "data"), "{missing}");
    let bad_name = run_spec(Opts::default().input("../up", tmp.path()), "o2");
    assert!(matches!(bad_name, Error::InvalidInput { .. }));
    let twice = run_spec(Opts::default().input("a", tmp.path()).input("a", tmp.path()), "o3");
    assert!(twice.to_string().contains("twice"), "{twice}");
    std::fs::create_dir(tmp.path().join("full")).unwrap();
    std::fs::write(tmp.path().join("full/keep"), b"mine").unwrap();
    let full = run_spec(Opts::default(), "full");
    assert!(matches!(full, Error::InvalidOutput { .. }), "{full}");
    assert_eq!(std::fs::read(tmp.path().join("full/keep")).unwrap(), b"mine", "existing files are never touched");
    let fifo_dir = tmp.path().join("fifo");
    std::fs::create_dir(&fifo_dir).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(fifo_dir.join("pipe")).status().unwrap().success());
    let fifo = run_spec(Opts::default().input("d", &fifo_dir), "o4");
    assert!(fifo.to_string().contains("FIFO"), "{fifo}");
    let zero_fuel = run_spec(Opts::default().limits(|l| l.fuel = 0), "o5");
    assert!(matches!(zero_fuel, Error::InvalidLimits { .. }));
}

#[test]
fn instance_slots_bound_concurrency_and_waiting_jobs_can_be_stopped() {
    use std::sync::mpsc;
    use tidepool_runtime::{JobEvent, Runtime, RuntimeConfig, Stage};

    let runtime = Arc::new(Runtime::new(RuntimeConfig { max_instances: 1, ..RuntimeConfig::default() }));
    let tmp = tempfile::tempdir().unwrap();
    let job = |name: &str, args: &[&str], running: Option<mpsc::Sender<()>>| {
        let mut spec = Opts::default()
            .args(args)
            .limits(|l| l.fuel = u64::MAX / 2)
            .spec(crate::util::guest(name), &tmp.path().join(format!("{name}-{}", args.len())));
        let cancel = Arc::new(AtomicBool::new(false));
        spec.cancel = Some(cancel.clone());
        if let Some(tx) = running {
            spec.events = Some(Arc::new(move |e| {
                if e == JobEvent::Stage(Stage::Running) {
                    let _ = tx.send(());
                }
            }));
        }
        let rt = runtime.clone();
        (std::thread::spawn(move || rt.run(&spec).unwrap()), cancel)
    };

    // A spinning job holds the only slot.
    let (tx, rx) = mpsc::channel();
    let (spinner, stop_spinner) = job("misbehave", &["spin"], Some(tx));
    rx.recv().unwrap();
    // A second job waits for it, and a stop while waiting ends it without running.
    let (waiting, stop_waiting) = job("noop", &[], None);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!waiting.is_finished(), "a second instance started although the only slot was taken");
    stop_waiting.store(true, Ordering::Relaxed);
    let stopped = waiting.join().unwrap();
    assert_eq!(stopped.receipt.outcome, Outcome::Stopped);
    assert_eq!(stopped.receipt.fuel_consumed, 0);
    // Once the spinner is stopped, the slot serves the next job.
    let (next, _) = job("noop", &["x"], None);
    stop_spinner.store(true, Ordering::Relaxed);
    assert_eq!(spinner.join().unwrap().receipt.outcome, Outcome::Stopped);
    assert!(next.join().unwrap().receipt.outcome.is_success());
}

//! The Python environment: CPython 3.12 for WASI runs scripts under the same limits, with the
//! same determinism and the same receipts as modules, and its examples agree with the Rust ones
//! byte for byte.
//!
//! The module is compiled once per target directory (the compile cache under it is shared by
//! every test binary and run); tests that only need the interpreter to start and stop use small
//! fuel limits.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use alloy_primitives::B256;
use tidepool_runtime::environment::{Environment, Environments};
use tidepool_runtime::files::FileTree;
use tidepool_runtime::{Algorithm, Error, Outcome, Receipt, VerifyRequest};

use crate::determinism::host_dataset;
use crate::util::{Opts, Ran, run, run_alg, runtime};

/// The Python environment, compiled (or loaded from the compile cache) once for all tests.
fn python() -> Arc<Environment> {
    static PYTHON: OnceLock<Arc<Environment>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let envs = Environments::load(&tidepool_test_artifacts::environments()).unwrap();
            let python = envs.get("python-3.12").unwrap_or_else(|e| panic!("{e}"));
            runtime().prepare_environment(&python, &Default::default()).unwrap();
            python
        })
        .clone()
}

fn script(source: &str) -> Algorithm {
    python().algorithm("test", FileTree::single("main.py", source.as_bytes().to_vec()).unwrap()).unwrap()
}

fn run_py(source: &str, opts: &Opts) -> Ran {
    run_alg(script(source), opts)
}

fn example(name: &str) -> Algorithm {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python").join(name);
    python().load_algorithm(&dir, 1 << 20).unwrap()
}

fn without_meta(r: &Receipt) -> Receipt {
    Receipt { meta: None, ..r.clone() }
}

const SDK_SCRIPT: &str = r#"
import tidepool

def run(job):
    top = job.arg_or("--top", 3)
    assert job.has_flag("--loud") and not job.has_flag("--quiet")
    assert [d.name for d in job.datasets()] == ["books", "notes"], job.datasets()
    files = job.all_files()
    assert [(f.dataset, f.relative_path, f.size) for f in files] == [
        ("books", "a.txt", 4), ("books", "sub/b.TXT", 3), ("notes", "n.md", 2)], files
    assert files[1].extension == "txt" and job.dataset("notes").files()[0].read_to_string() == "hi"
    with job.create_output("deep/er/out.txt") as out:
        out.write(f"top={top} name={job.name} args={job.args}\n")
    job.write_output("bytes.bin", b"\x00\xff")
    job.progress(1, 2, "half \"way\"\n")
    job.progress(7)
    job.metric("ratio", 0.5)
    job.metric("count", 12)
    job.metric("big", 1e21)
    print("ok")

tidepool.main(run)
"#;

#[test]
fn a_script_runs_with_the_sdk_and_its_receipt_records_the_environment() {
    let books = tidepool_test_artifacts::dataset(&[("a.txt", b"abcd"), ("sub/b.TXT", b"xyz")]);
    let notes = tidepool_test_artifacts::dataset(&[("n.md", b"hi")]);
    let opts =
        Opts::default().input("books", books.path()).input("notes", notes.path()).args(&["--top", "5", "--loud"]);
    let ran = run_py(SDK_SCRIPT, &opts);
    ran.assert_success();
    assert_eq!(ran.stdout(), "ok\n");
    assert_eq!(
        std::fs::read_to_string(ran.outputs().join("deep/er/out.txt")).unwrap(),
        "top=5 name=main args=['--top', '5', '--loud']\n"
    );
    assert_eq!(std::fs::read(ran.outputs().join("bytes.bin")).unwrap(), b"\x00\xff");
    // The event lines, exactly as the Rust SDK writes them.
    assert_eq!(
        ran.stderr(),
        "@tidepool {\"event\":\"progress\",\"done\":1,\"total\":2,\"message\":\"half \\\"way\\\"\\n\"}\n\
         @tidepool {\"event\":\"progress\",\"done\":7,\"total\":null,\"message\":\"\"}\n\
         @tidepool {\"event\":\"metric\",\"name\":\"ratio\",\"value\":0.5}\n\
         @tidepool {\"event\":\"metric\",\"name\":\"count\",\"value\":12}\n\
         @tidepool {\"event\":\"metric\",\"name\":\"big\",\"value\":1000000000000000000000}\n"
    );

    let r = &ran.result.receipt;
    let env = r.environment.as_ref().expect("a version-2 receipt records its environment");
    assert_eq!(env, python().info());
    assert_eq!(env.name, "python-3.12");
    assert_eq!(env.argv, ["python", "/algorithm/main.py", "/data/inputs", "/data/outputs"]);
    assert!(env.env.contains(&"PYTHONHASHSEED=0".to_string()), "{:?}", env.env);
    assert_eq!(env.mounts.len(), 1);
    assert_eq!(env.mounts[0].name, "/sdk");
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/python");
    assert_eq!(env.mounts[0].root, tidepool_runtime::tree::scan(&sdk).unwrap().root(), "the SDK's tree root");
    let module = std::fs::read(tidepool_test_artifacts::environments().join("python-3.12/python-3.12.0.wasm")).unwrap();
    assert_eq!(env.module_hash, tidepool_runtime::tree::blake3_b256(&module));
    assert_eq!(r.algorithm_hash, script(SDK_SCRIPT).hash());
    assert_eq!(r.algorithm_name, "test");
    assert_eq!(r.args, ["--top", "5", "--loud"]);
    assert!(r.hash_is_consistent() && r.version == 2);
}

#[test]
fn a_failing_script_fails_the_job_with_its_message() {
    let raised = run_py(
        "import tidepool\ndef run(job):\n    raise tidepool.Error('no luck')\ntidepool.main(run)\n",
        &Opts::default(),
    );
    assert_eq!(raised.outcome(), &Outcome::Exited { code: 1 });
    assert_eq!(raised.stderr(), "error: no luck\n");
    let crashed = run_py("import json\njson.loads('{')\n", &Opts::default());
    assert_eq!(crashed.outcome(), &Outcome::Exited { code: 1 });
    assert!(crashed.stderr().contains("json.decoder.JSONDecodeError"), "{}", crashed.stderr());
}

const OBSERVE: &str = r#"
import os, random, sys, time
print("time", repr(time.time()))
print("monotonic", time.monotonic_ns() > 0)
print("random", random.random(), random.getrandbits(64))
print("urandom", os.urandom(8).hex())
print("hash", hash("tidepool"), hash(b"tidepool"), hash(("a", 1)))
print("set", list({"alpha", "beta", "gamma", "delta", "epsilon"}))
print("listdir", os.listdir("/data/inputs/data"))
for root, dirs, files in os.walk("/data/inputs"):
    print("walk", root, dirs, files)
st = os.stat("/data/inputs/data/a.txt")
print("stat", st.st_mtime_ns, st.st_ino, st.st_size)
print("argv", sys.argv)
print("path", sys.path)
print("environ", sorted(os.environ))
"#;

fn line<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout.lines().find(|l| l.starts_with(&format!("{key} "))).unwrap_or_else(|| panic!("no `{key}` in:\n{stdout}"))
}

#[test]
fn python_sees_a_deterministic_world() {
    let (t1, t2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d1 = host_dataset(t1.path(), false, SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000));
    // Another creation order, other host timestamps and inodes, another path.
    let d2 = host_dataset(&t2.path().join("elsewhere"), true, SystemTime::now());
    let a = run_py(OBSERVE, &Opts::default().input("data", &d1));
    let b = run_py(OBSERVE, &Opts::default().input("data", &d2));
    a.assert_success();
    assert_eq!(a.stdout(), b.stdout(), "Python saw a different world");
    assert_eq!(without_meta(&a.result.receipt), without_meta(&b.result.receipt));
    assert!(a.result.receipt.deterministic);

    let out = a.stdout();
    assert_eq!(line(&out, "listdir"), "listdir ['a.txt', 'b.txt', 'sub', 'z']", "sorted, whatever the host did");
    assert_eq!(line(&out, "stat").split(' ').nth(1), Some("1735689600000000000"), "file times are a constant");
    let now: f64 = line(&out, "time")[5..].parse().unwrap();
    assert!((1_735_689_600.0..1_735_689_600.0 + 3600.0).contains(&now), "the virtual clock starts at 2025: {now}");
    assert_eq!(line(&out, "argv"), "argv ['/algorithm/main.py', '/data/inputs', '/data/outputs']");
    assert!(line(&out, "path").contains("'/algorithm'") && line(&out, "path").contains("'/sdk'"));

    // Another seed: other random numbers, the same string hashes (PYTHONHASHSEED=0).
    let c = run_py(OBSERVE, &Opts { seed: Some(B256::repeat_byte(7)), ..Opts::default().input("data", &d1) });
    let other = c.stdout();
    assert_ne!(line(&out, "random"), line(&other, "random"));
    assert_ne!(line(&out, "urandom"), line(&other, "urandom"));
    assert_eq!(line(&out, "hash"), line(&other, "hash"));
    assert_eq!(line(&out, "set"), line(&other, "set"));
}

#[test]
fn an_endless_loop_ends_by_fuel_or_timeout() {
    let spin = "while True:\n    pass\n";
    let a = run_py(spin, &Opts::default().limits(|l| l.fuel = 2_000_000_000));
    let b = run_py(spin, &Opts::default().limits(|l| l.fuel = 2_000_000_000));
    assert_eq!(a.outcome(), &Outcome::OutOfFuel);
    assert_eq!(a.result.receipt.fuel_consumed, 2_000_000_000);
    assert_eq!(a.result.receipt.receipt_hash, b.result.receipt.receipt_hash);
    let timed = run_py(
        spin,
        &Opts::default().limits(|l| {
            l.timeout_ms = 1000;
            l.fuel = u64::MAX / 2;
        }),
    );
    assert_eq!(timed.outcome(), &Outcome::Timeout);
}

#[test]
fn a_memory_bomb_ends_as_memory_limit() {
    let bomb = "chunks = []\nwhile True:\n    chunks.append(bytearray(1 << 20))\n";
    let r = run_py(bomb, &Opts::default().limits(|l| l.memory_bytes = 64 << 20));
    assert_eq!(r.outcome(), &Outcome::MemoryLimit, "stderr: {}", r.stderr());
    assert!(r.stderr().contains("MemoryError"), "Python reported it: {}", r.stderr());
}

#[test]
fn writing_past_the_output_quota_ends_as_output_quota() {
    let writer = "with open('/data/outputs/big.bin', 'wb') as f:\n    while True:\n        f.write(b'x' * 65536)\n";
    let r = run_py(writer, &Opts::default().limits(|l| l.output_bytes = 1 << 20));
    assert_eq!(r.outcome(), &Outcome::OutputQuota);
    let size = std::fs::metadata(r.outputs().join("big.bin")).unwrap().len();
    assert!(size <= 1 << 20, "{size} bytes written under a 1 MiB quota");
}

/// Text that exercises word boundaries: case, digits, UTF-8, long words, punctuation runs.
const TEXT: &str = "The cat SAT; the cat's hat. Über ÜBER über naïve café 42 4two\n\
                    incomprehensibilities Incomprehensibilities a-b_c--d\ttab\r\nend";

#[test]
fn the_python_examples_match_the_rust_examples_byte_for_byte() {
    let books = tidepool_test_artifacts::dataset(&[
        ("a.txt", TEXT.as_bytes()),
        ("b/c.txt", &TEXT.repeat(50).into_bytes()),
        ("empty.txt", b""),
        ("latin1.txt", b"caf\xe9 \xff\xfe word"),
    ]);
    let weather = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/weather");
    let tricky = tidepool_test_artifacts::dataset(&[(
        "t.csv",
        "name,\"a,b\",c,d\n\"x\"\"y\",1.5,-0,1e3\nz,\" 2\",0,\u{a0}7\u{a0}\n\"multi\nline\",,+.5,n/a\n\n,3.,-0.0,inf\n"
            .as_bytes(),
    )]);
    let prose =
        tidepool_test_artifacts::dataset(&[("a.txt", TEXT.as_bytes()), ("latin1.txt", b"caf\xe9 \xff\xfe word")]);
    let cases: [(&str, Opts); 4] = [
        ("wordfreq", Opts::default().input("books", books.path()).args(&["--top", "0"])),
        ("wordfreq", Opts::default().input("books", books.path()).args(&["--top", "4", "--min-length", "3"])),
        ("csv-stats", Opts::default().input("weather", &weather).input("tricky", tricky.path())),
        ("csv-stats", Opts::default().input("prose", prose.path()).args(&["--all-files", "--delimiter", " "])),
    ];
    for (name, opts) in &cases {
        let rust = run(name, opts);
        let python = run_alg(example(name), opts);
        rust.assert_success();
        python.assert_success();
        assert_eq!(python.result.outputs, rust.result.outputs, "{name} {:?}: the output trees differ", opts.args);
        for entry in &rust.result.outputs.entries {
            let (p, r) = (python.outputs().join(&entry.path), rust.outputs().join(&entry.path));
            assert_eq!(std::fs::read_to_string(p).ok(), std::fs::read_to_string(r).ok(), "{name}: {}", entry.path);
        }
        assert_eq!(python.stdout(), rust.stdout(), "{name}: stdout");
    }
}

#[test]
fn verify_names_an_edited_script_and_another_environment_module() {
    let books = tidepool_test_artifacts::dataset(&[("a.txt", TEXT.as_bytes())]);
    let opts = Opts::default().input("books", books.path());
    let ran = run_alg(example("wordfreq"), &opts);
    ran.assert_success();
    let inputs = vec![tidepool_runtime::InputSpec::new("books", books.path())];
    let verify = |algorithm: Algorithm| {
        runtime()
            .verify(&VerifyRequest {
                receipt: ran.result.receipt.clone(),
                algorithm,
                inputs: inputs.clone(),
                claimed_outputs: Some(ran.outputs()),
            })
            .unwrap()
    };
    let honest = verify(example("wordfreq"));
    assert!(honest.verified(), "{:?}", honest.mismatches);

    let source = String::from_utf8(example("wordfreq").files().unwrap().file("main.py").unwrap().to_vec()).unwrap();
    let edited = source.replace("top = job.arg_or(\"--top\", 100)", "top = job.arg_or(\"--top\", 2)");
    assert_ne!(edited, source);
    let report =
        verify(python().algorithm("wordfreq", FileTree::single("main.py", edited.into_bytes()).unwrap()).unwrap());
    let fields: Vec<&str> = report.mismatches.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(fields, ["algorithm_hash"], "the edit is named, and nothing else: {report:?}");
    assert!(report.rerun.is_none(), "another algorithm is not re-executed");

    // The same environment with another module (a custom section appended: still valid).
    let other = other_python();
    let report = verify(
        other
            .load_algorithm(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/wordfreq"), 1 << 20)
            .unwrap(),
    );
    let fields: Vec<&str> = report.mismatches.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(fields, ["environment.module_hash"], "{report:?}");
    assert!(report.rerun.is_none(), "another module is not re-executed");
}

/// `python-3.12` with a different module: the real one plus a custom section.
fn other_python() -> Arc<Environment> {
    let dir = tempfile::tempdir().unwrap().keep();
    let env = dir.join("python-3.12");
    std::fs::create_dir_all(env.join("sdk")).unwrap();
    let src = tidepool_test_artifacts::environments().join("python-3.12");
    let mut module = std::fs::read(src.join("python-3.12.0.wasm")).unwrap();
    module.extend_from_slice(b"\x00\x06\x05extra");
    std::fs::write(env.join("python-3.12.0.wasm"), &module).unwrap();
    std::fs::copy(src.join("sdk/tidepool.py"), env.join("sdk/tidepool.py")).unwrap();
    let definition = std::fs::read_to_string(src.join("environment.toml"))
        .unwrap()
        .replace(&python().info().module_hash.to_string(), &tidepool_runtime::tree::blake3_b256(&module).to_string());
    std::fs::write(env.join("environment.toml"), definition).unwrap();
    Environments::load(&dir).unwrap().get("python-3.12").unwrap()
}

#[test]
fn bad_algorithms_and_environments_are_refused_with_clear_errors() {
    let empty = tempfile::tempdir().unwrap();
    let err = python().load_algorithm(empty.path(), 1 << 20).unwrap_err();
    assert!(matches!(err, Error::InvalidAlgorithm { .. }) && err.to_string().contains("has no main.py"), "{err}");
    let envs = Environments::load(&tidepool_test_artifacts::environments()).unwrap();
    let offered = envs.describe();
    assert_eq!(offered.len(), 1, "{offered:?}");
    assert_eq!((offered[0].name.as_str(), offered[0].module_hash), ("python-3.12", python().info().module_hash));
    assert!(runtime().prepare_environment(&python(), &Default::default()).unwrap(), "compiled once, then cached");
    let err = envs.get("python-2.7").unwrap_err();
    assert!(err.to_string().contains("python-3.12"), "the error lists what is offered: {err}");
    assert!(err.is_client_error());
    assert_eq!(envs.pick(&tidepool_test_artifacts::module("noop")).unwrap(), None, "a module runs as itself");
    assert_eq!(envs.pick(Path::new("x/main.py")).unwrap().as_deref(), Some("python-3.12"));
    assert!(envs.pick(Path::new("notes.txt")).is_err());

    // A module that is not the pinned one is refused, naming the fix.
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("py");
    std::fs::create_dir_all(env.join("sdk")).unwrap();
    let src = tidepool_test_artifacts::environments().join("python-3.12");
    std::fs::copy(src.join("environment.toml"), env.join("environment.toml")).unwrap();
    std::fs::write(env.join("python-3.12.0.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let err = Environments::load(dir.path()).unwrap().get("python-3.12").unwrap_err();
    assert!(err.to_string().contains("scripts/setup.sh"), "{err}");
    std::fs::remove_file(env.join("python-3.12.0.wasm")).unwrap();
    let err = Environments::load(dir.path()).unwrap().get("python-3.12").unwrap_err();
    assert!(err.to_string().contains("missing") && err.to_string().contains("scripts/setup.sh"), "{err}");
}

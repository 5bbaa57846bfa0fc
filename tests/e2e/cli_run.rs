//! `tidepool run`: the contract other tools rely on (flags, outputs, receipt, exit status).

use crate::util::{dataset, exec, module, read_json, s, tidepool, tp};

const TEXT: &str = "the cat sat on the mat; the end\n";

#[test]
fn a_successful_run_writes_outputs_a_receipt_and_a_summary() {
    let books = dataset(&[("a.txt", TEXT.as_bytes())]);
    let work = tempfile::tempdir().unwrap();
    let (out, receipt) = (work.path().join("out"), work.path().join("r/receipt.json"));
    let input = format!("books={}", s(books.path()));
    let ran = tp(&[
        "run",
        s(&module("wordfreq")),
        "--input",
        &input,
        "--output",
        s(&out),
        "--receipt",
        s(&receipt),
        "--",
        "--top",
        "2",
    ]);
    ran.expect_code(0);
    assert_eq!(std::fs::read_to_string(out.join("wordfreq.csv")).unwrap(), "word,count\nthe,3\ncat,1\n");
    assert_eq!(ran.stdout(), "1 files, 32 bytes, 8 words, 6 distinct\n", "the algorithm's stdout is ours");
    for field in
        ["outcome   exited with code 0", "outputs   2 files", "wordfreq.csv", "metric    words = 8", "receipt   0x"]
    {
        assert!(ran.stderr().contains(field), "summary lacks `{field}`:\n{}", ran.stderr());
    }
    assert!(!ran.stderr().contains("@tidepool"), "event lines are shown as progress, not echoed");
    let r = read_json(&receipt);
    assert_eq!(r["outcome"], serde_json::json!({"kind": "exited", "code": 0}));
    assert_eq!(r["args"], serde_json::json!(["--top", "2"]));
    assert_eq!(r["inputs"][0]["name"], "books");
    assert_eq!(r["deterministic"], true);
}

#[test]
fn limits_given_in_human_units_reach_the_receipt() {
    let work = tempfile::tempdir().unwrap();
    let receipt = work.path().join("r.json");
    let ran = tp(&[
        "run",
        s(&module("mandelbrot")),
        "--output",
        s(&work.path().join("o")),
        "--receipt",
        s(&receipt),
        "--memory",
        "64MiB",
        "--timeout",
        "30s",
        "--output-quota",
        "2GiB",
        "--fuel",
        "1_000_000_000",
        "--output-files",
        "7",
        "--stdout-cap",
        "4KiB",
        "--max-stack",
        "1MiB",
        "--seed",
        &"ab".repeat(32),
        "--",
        "--width",
        "32",
        "--height",
        "16",
    ]);
    ran.expect_code(0);
    let l = &read_json(&receipt)["limits"];
    assert_eq!(l["memory_bytes"], 64 << 20);
    assert_eq!(l["timeout_ms"], 30_000);
    assert_eq!(l["output_bytes"], 2u64 << 30);
    assert_eq!(l["fuel"], 1_000_000_000u64);
    assert_eq!(l["output_files"], 7);
    assert_eq!(l["stdout_bytes"], 4096);
    assert_eq!(l["max_wasm_stack"], 1 << 20);
    assert_eq!(read_json(&receipt)["seed"], format!("0x{}", "ab".repeat(32)));
}

#[test]
fn a_failing_algorithm_exits_1_with_its_outcome_in_the_receipt() {
    let work = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &[&str], &str); 4] = [
        (&["exit", "3"], &[], "exited"),
        (&["panic"], &[], "trap"),
        (&["spin"], &["--fuel", "2000000"], "out_of_fuel"),
        (&["spin"], &["--timeout", "300ms"], "timeout"),
    ];
    for (i, (guest_args, flags, kind)) in cases.iter().enumerate() {
        let receipt = work.path().join(format!("r{i}.json"));
        let out = work.path().join(format!("o{i}"));
        let misbehave = module("misbehave");
        let mut args = vec!["run", "--quiet", s(&misbehave), "--output", s(&out), "--receipt", s(&receipt)];
        args.extend_from_slice(flags);
        args.push("--");
        args.extend_from_slice(guest_args);
        let ran = tp(&args);
        ran.expect_code(1);
        assert_eq!(read_json(&receipt)["outcome"]["kind"], *kind, "{guest_args:?}");
        assert!(ran.stderr().contains("outcome"), "a summary is printed for failures too");
    }
    assert!(std::fs::read_to_string(work.path().join("r0.json")).unwrap().contains("\"code\": 3"));
}

#[test]
fn what_cannot_run_exits_2_with_a_clear_error() {
    let work = tempfile::tempdir().unwrap();
    let not_wasm = work.path().join("notes.wasm");
    std::fs::write(&not_wasm, "hello").unwrap();
    let out = |n: &str| work.path().join(n).to_str().unwrap().to_string();
    let wf = module("wordfreq");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["run".into(), s(&not_wasm).into(), "--output".into(), out("a")], "invalid module"),
        (vec!["run".into(), s(&work.path().join("missing.wasm")).into(), "--output".into(), out("b")], "missing.wasm"),
        (
            vec![
                "run".into(),
                s(&wf).into(),
                "--output".into(),
                out("c"),
                "--input".into(),
                format!("books={}", out("none")),
            ],
            "input `books`",
        ),
        (vec!["run".into(), s(&wf).into(), "--output".into(), out("d"), "--input".into(), "books".into()], "NAME=DIR"),
        (
            vec!["run".into(), s(&wf).into(), "--output".into(), out("e"), "--memory".into(), "12XB".into()],
            "invalid size",
        ),
        (
            vec!["run".into(), s(&wf).into(), "--output".into(), out("f"), "--timeout".into(), "10".into()],
            "invalid duration",
        ),
        (
            vec!["run".into(), s(&wf).into(), "--output".into(), out("g"), "--seed".into(), "123".into()],
            "64 hex digits",
        ),
        (vec!["run".into(), s(&wf).into(), "--output".into(), out("h"), "--fuel".into(), "0".into()], "fuel"),
        (vec!["run".into(), s(&wf).into()], "--output"),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ran = tp(&args);
        ran.expect_code(2);
        assert!(ran.stderr().contains(expected), "{args:?}: expected `{expected}` in:\n{}", ran.stderr());
    }
}

#[test]
fn existing_outputs_are_never_overwritten() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("precious.txt"), "keep me").unwrap();
    let ran = tp(&["run", s(&module("mandelbrot")), "--output", s(&out)]);
    ran.expect_code(2);
    assert!(ran.stderr().contains("not empty"), "{}", ran.stderr());
    assert_eq!(std::fs::read_to_string(out.join("precious.txt")).unwrap(), "keep me");
}

#[test]
fn the_same_job_twice_gives_the_same_receipt_and_uses_the_compile_cache() {
    let books = dataset(&[("a.txt", TEXT.as_bytes())]);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let input = format!("books={}", s(books.path()));
    let mut receipts = Vec::new();
    for i in 0..2 {
        let receipt = work.path().join(format!("r{i}.json"));
        let mut cmd = tidepool();
        cmd.env("TIDEPOOL_CACHE_DIR", &cache).args(["run", s(&module("wordfreq")), "--input", &input]);
        cmd.args(["--output", s(&work.path().join(format!("o{i}"))), "--receipt", s(&receipt)]);
        let ran = exec(cmd);
        ran.expect_code(0);
        assert_eq!(ran.stderr().contains("compiled module from cache"), i == 1, "{}", ran.stderr());
        let mut r = read_json(&receipt);
        r.as_object_mut().unwrap().remove("meta");
        receipts.push(r);
    }
    assert_eq!(receipts[0], receipts[1]);
}

#[test]
fn json_mode_and_logs() {
    let books = dataset(&[("a.txt", TEXT.as_bytes())]);
    let work = tempfile::tempdir().unwrap();
    let input = format!("books={}", s(books.path()));
    let logs = work.path().join("logs");
    let ran = tp(&[
        "run",
        s(&module("wordfreq")),
        "--input",
        &input,
        "--output",
        s(&work.path().join("o")),
        "--json",
        "--logs",
        s(&logs),
    ]);
    ran.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&ran.stdout()).unwrap();
    assert_eq!(v["receipt"]["outcome"]["kind"], "exited");
    assert_eq!(v["outputs"][1]["path"], "wordfreq.csv");
    assert_eq!(std::fs::read_to_string(logs.join("stdout.log")).unwrap(), "1 files, 32 bytes, 8 words, 6 distinct\n");
    assert!(std::fs::read_to_string(logs.join("stderr.log")).unwrap().contains("@tidepool"));
}

//! `tidepool verify`: a yes for an honest receipt, a precise no otherwise.

use crate::util::{dataset, module, read_json, s, tp};

struct Job {
    work: tempfile::TempDir,
    books: tempfile::TempDir,
}

impl Job {
    fn receipt(&self) -> std::path::PathBuf {
        self.work.path().join("receipt.json")
    }

    fn outputs(&self) -> std::path::PathBuf {
        self.work.path().join("out")
    }

    fn input(&self) -> String {
        format!("books={}", s(self.books.path()))
    }

    /// `tidepool verify` of this job's receipt, with `extra` arguments.
    fn verify(&self, extra: &[&str]) -> crate::util::Ran {
        let (receipt, wordfreq) = (self.receipt(), module("wordfreq"));
        let input = self.input();
        let mut args = vec!["verify", s(&receipt), "--algorithm", s(&wordfreq), "--input", &input];
        args.extend_from_slice(extra);
        tp(&args)
    }
}

fn job() -> Job {
    let books = dataset(&[("a.txt", b"one fish two fish\n"), ("b/c.txt", b"red fish blue fish\n")]);
    let work = tempfile::tempdir().unwrap();
    let j = Job { work, books };
    tp(&[
        "run",
        "-q",
        s(&module("wordfreq")),
        "--input",
        &j.input(),
        "--output",
        s(&j.outputs()),
        "--receipt",
        s(&j.receipt()),
    ])
    .expect_code(0);
    j
}

#[test]
fn an_honest_receipt_verifies_with_its_outputs() {
    let j = job();
    let ran = j.verify(&["--outputs", s(&j.outputs())]);
    ran.expect_code(0);
    assert!(ran.stdout().starts_with("verified: 0x"), "{}", ran.stdout());
    assert!(ran.stdout().contains("the outputs match"));
}

#[test]
fn tampered_inputs_are_named() {
    let j = job();
    std::fs::write(j.books.path().join("a.txt"), "one fish two fish three fish\n").unwrap();
    let ran = j.verify(&[]);
    ran.expect_code(1);
    let first = ran.stdout().lines().nth(1).unwrap_or_default().to_string();
    assert!(first.trim_start().starts_with("inputs[books].root"), "the cause comes first:\n{}", ran.stdout());
}

#[test]
fn forged_fields_are_caught_with_or_without_a_new_hash() {
    let j = job();
    let mut r = read_json(&j.receipt());
    r["fuel_consumed"] = serde_json::json!(1);
    let forged = j.work.path().join("forged.json");
    std::fs::write(&forged, r.to_string()).unwrap();
    let ran = tp(&["verify", s(&forged), "--algorithm", s(&module("wordfreq")), "--input", &j.input(), "--json"]);
    ran.expect_code(1);
    let report: serde_json::Value = serde_json::from_str(&ran.stdout()).unwrap();
    let fields: Vec<&str> =
        report["mismatches"].as_array().unwrap().iter().map(|m| m["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"receipt_hash") && fields.contains(&"fuel_consumed"), "{fields:?}");
    assert_eq!(report["verified"], false);
}

#[test]
fn altered_claimed_outputs_are_named() {
    let j = job();
    std::fs::write(j.outputs().join("wordfreq.csv"), "word,count\nshark,99\n").unwrap();
    let ran = j.verify(&["--outputs", s(&j.outputs())]);
    ran.expect_code(1);
    assert!(ran.stdout().contains("outputs: differs: wordfreq.csv"), "{}", ran.stdout());
}

#[test]
fn unusable_arguments_exit_2() {
    let j = job();
    let junk = j.work.path().join("junk.json");
    std::fs::write(&junk, "{\"not\": \"a receipt\"}").unwrap();
    let wf = module("wordfreq");
    for (args, expected) in [
        (vec!["verify", s(&junk), "--algorithm", s(&wf)], "not a Tidepool receipt"),
        (vec!["verify", "/nonexistent.json", "--algorithm", s(&wf)], "nonexistent.json"),
        (vec!["verify", s(&j.receipt()), "--algorithm", "/nonexistent.wasm"], "nonexistent.wasm"),
        (vec!["verify", s(&j.receipt())], "--algorithm"),
    ] {
        let ran = tp(&args);
        ran.expect_code(2);
        assert!(ran.stderr().contains(expected), "{args:?}: expected `{expected}` in:\n{}", ran.stderr());
    }
}

/// A receipt that claims its job finished, re-executed where the job times out: exit 2 and
/// why, never a "verified" (the results were not compared) nor an unproven "NOT verified".
#[test]
fn a_rerun_that_times_out_exits_2_with_the_reason() {
    let work = tempfile::tempdir().unwrap();
    let (receipt, misbehave) = (work.path().join("receipt.json"), module("misbehave"));
    let out = work.path().join("out");
    tp(&["run", "-q", s(&misbehave), "--output", s(&out), "--fuel", "5000000", "--receipt", s(&receipt), "--", "spin"])
        .expect_code(1);
    let mut claimed: tidepool_runtime::Receipt = serde_json::from_value(read_json(&receipt)).unwrap();
    assert_eq!(claimed.outcome, tidepool_runtime::receipt::Outcome::OutOfFuel);
    claimed.outcome = tidepool_runtime::receipt::Outcome::Exited { code: 0 };
    claimed.limits.fuel = u64::MAX / 2;
    claimed.limits.timeout_ms = 300;
    std::fs::write(&receipt, serde_json::to_string(&claimed.seal()).unwrap()).unwrap();
    let ran = tp(&["verify", s(&receipt), "--algorithm", s(&misbehave)]);
    ran.expect_code(2);
    assert!(ran.stdout().starts_with("could not be checked: 0x"), "{}", ran.stdout());
    assert!(ran.stdout().contains("timeout of 300 ms"), "{}", ran.stdout());
}

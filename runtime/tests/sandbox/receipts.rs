//! Receipts and verification, with the example algorithms doing real work.

use std::collections::HashMap;

use tidepool_runtime::receipt::Outcome;
use tidepool_runtime::tree;
use tidepool_runtime::{Algorithm, InputSpec, VerifyRequest};

use crate::util::{Opts, dataset, guest, run, runtime};

const BOOK: &str = "It was the best of times, it was the worst of times, it was the age of wisdom, \
                    it was the age of foolishness. The end; the END!\n";

fn verify(
    alg: Algorithm,
    receipt: &tidepool_runtime::Receipt,
    inputs: &[(&str, &std::path::Path)],
    claimed: Option<&std::path::Path>,
) -> tidepool_runtime::VerifyReport {
    runtime()
        .verify(&VerifyRequest {
            receipt: receipt.clone(),
            algorithm: alg,
            inputs: inputs.iter().map(|(n, d)| InputSpec::new(*n, *d)).collect(),
            claimed_outputs: claimed.map(|p| p.to_path_buf()),
        })
        .unwrap()
}

#[test]
fn wordfreq_counts_words_and_its_receipt_describes_the_run() {
    let books = dataset(&[("dickens.txt", BOOK.as_bytes()), ("more/short.txt", b"Times. times? TIMES")]);
    let ran = run("wordfreq", &Opts::default().input("books", books.path()).args(&["--top", "3"]));
    ran.assert_success();
    // Count independently.
    let mut counts: HashMap<String, u64> = HashMap::new();
    for text in [BOOK, "Times. times? TIMES"] {
        for w in text.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()) {
            *counts.entry(w.to_ascii_lowercase()).or_default() += 1;
        }
    }
    let mut ranked: Vec<(String, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let expected: String = std::iter::once("word,count\n".to_string())
        .chain(ranked.iter().take(3).map(|(w, c)| format!("{w},{c}\n")))
        .collect();
    assert_eq!(std::fs::read_to_string(ran.outputs().join("wordfreq.csv")).unwrap(), expected);

    let r = &ran.result.receipt;
    assert!(r.hash_is_consistent());
    assert_eq!(r.algorithm_name, "wordfreq");
    assert_eq!(r.args, ["--top", "3"]);
    assert_eq!(r.algorithm_hash, guest("wordfreq").hash());
    assert_eq!(r.inputs.len(), 1);
    assert_eq!(r.inputs[0].root, tree::scan(books.path()).unwrap().root());
    assert_eq!(r.outputs_root, tree::scan(&ran.outputs()).unwrap().root());
    assert_eq!(r.stdout_hash, tree::blake3_b256(&ran.result.stdout));
    assert_eq!(r.stderr_hash, tree::blake3_b256(&ran.result.stderr));
    assert_eq!(r.stderr_len, ran.result.stderr.len() as u64);
    assert!(r.fuel_consumed > 0 && r.fuel_consumed < r.limits.fuel);
    // The SDK's progress and metric lines are in the log.
    assert!(ran.stderr().contains(r#"@tidepool {"event":"progress""#), "{}", ran.stderr());
    assert!(ran.stderr().contains(r#""event":"metric","name":"words""#));
}

#[test]
fn guest_events_reach_the_host_while_the_job_runs() {
    let books = dataset(&[("a.txt", b"one two"), ("b.txt", b"three")]);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Opts::default().input("books", books.path()).spec(guest("wordfreq"), &tmp.path().join("out"));
    spec.events = Some(std::sync::Arc::new(move |e| sink.lock().unwrap().push(e)));
    runtime().run(&spec).unwrap();
    let events = seen.lock().unwrap();
    use tidepool_runtime::{GuestEvent::*, JobEvent, Stage};
    let stages: Vec<Stage> =
        events.iter().filter_map(|e| if let JobEvent::Stage(s) = e { Some(*s) } else { None }).collect();
    assert_eq!(stages, [Stage::ConfiguringVolumes, Stage::Provisioning, Stage::Running, Stage::PublishingResults]);
    let guest: Vec<&tidepool_runtime::GuestEvent> =
        events.iter().filter_map(|e| if let JobEvent::Guest(g) = e { Some(g) } else { None }).collect();
    assert!(guest.iter().any(|e| matches!(e, Progress { done: 12, total: Some(12), .. })), "{events:?}");
    assert!(guest.iter().any(|e| matches!(e, Metric { name, value } if name == "words" && *value == 3.0)));
    // Guest events happen while running, between the Running and PublishingResults stages.
    let running = events.iter().position(|e| *e == JobEvent::Stage(Stage::Running)).unwrap();
    let first_guest = events.iter().position(|e| matches!(e, JobEvent::Guest(_))).unwrap();
    assert!(first_guest > running);
}

#[test]
fn csv_stats_computes_per_column_statistics() {
    let csv = "name,age,score\nann,30,1.5\nbob,40,2.5\n\"c, d\",,3.5\neve,50,x\n";
    let data = dataset(&[("people.csv", csv.as_bytes()), ("notes.txt", b"ignored")]);
    let ran = run("csv-stats", &Opts::default().input("survey", data.path()));
    ran.assert_success();
    let table = std::fs::read_to_string(ran.outputs().join("stats.csv")).unwrap();
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows[0], "dataset,file,column,count,missing,mean,stddev,min,p05,p25,median,p75,p95,max");
    assert_eq!(rows.len(), 4, "one row per column of the one CSV file:\n{table}");
    // age: 30, 40, 50 (one empty cell); score: 1.5, 2.5, 3.5 (one `x`).
    assert_eq!(rows[2], "survey,people.csv,age,3,1,40,10,30,31,35,40,45,49,50");
    assert_eq!(rows[3], "survey,people.csv,score,3,1,2.5,1,1.5,1.6,2,2.5,3,3.4,3.5");
    assert!(rows[1].starts_with("survey,people.csv,name,0,4,"), "{}", rows[1]);
    let json = std::fs::read_to_string(ran.outputs().join("stats.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed[1]["quantiles"]["p50"], 40.0);
}

#[test]
fn mandelbrot_renders_a_pgm() {
    let ran = run("mandelbrot", &Opts::default().args(&["--width", "64", "--height", "48", "--max-iter", "100"]));
    ran.assert_success();
    let pgm = std::fs::read(ran.outputs().join("mandelbrot.pgm")).unwrap();
    let header = b"P5\n64 48\n255\n";
    assert_eq!(&pgm[..header.len()], header);
    assert_eq!(pgm.len(), header.len() + 64 * 48);
    // The centre row is the real axis from -2 to 1: c = -2 (the needle's tip) and c = -1 are
    // inside the set (black), c = 0.5 is outside. The top-left corner, -2 - 1.125i, is outside.
    let pixel = |x: usize, y: usize| pgm[header.len() + y * 64 + x];
    assert_eq!(pixel(0, 24), 0, "c = -2");
    assert_eq!(pixel(32 - 11, 24), 0, "c = -0.5 - 11 * 3/64 ≈ -1.02");
    assert!(pixel(32 + 21, 24) > 0, "c = -0.5 + 21 * 3/64 ≈ 0.48");
    assert!(pixel(0, 0) > 0, "c = -2 - 1.125i");
}

#[test]
fn verify_confirms_an_honest_receipt_and_its_outputs() {
    let books = dataset(&[("dickens.txt", BOOK.as_bytes())]);
    let ran = run("wordfreq", &Opts::default().input("books", books.path()));
    let report = verify(guest("wordfreq"), &ran.result.receipt, &[("books", books.path())], Some(&ran.outputs()));
    assert!(report.verified(), "{:?} {:?}", report.mismatches, report.output_mismatches);
    assert_eq!(report.rerun.unwrap().receipt_hash, ran.result.receipt.receipt_hash);
}

#[test]
fn verify_names_what_differs() {
    let books = dataset(&[("dickens.txt", BOOK.as_bytes())]);
    let ran = run("wordfreq", &Opts::default().input("books", books.path()));
    let receipt = ran.result.receipt.clone();
    let fields = |r: &tidepool_runtime::VerifyReport| r.mismatches.iter().map(|d| d.field.clone()).collect::<Vec<_>>();

    // Tampered inputs.
    let tampered = dataset(&[("dickens.txt", b"It was the best of times. Or so they say.")]);
    let report = verify(guest("wordfreq"), &receipt, &[("books", tampered.path())], None);
    assert!(!report.verified());
    let f = fields(&report);
    assert!(f.contains(&"inputs[books].root".to_string()) && f.contains(&"outputs_root".to_string()), "{f:?}");

    // A forged field, left unsealed: the hash gives it away.
    let mut forged = receipt.clone();
    forged.fuel_consumed /= 2;
    let f = fields(&verify(guest("wordfreq"), &forged, &[("books", books.path())], None));
    assert!(f.contains(&"receipt_hash".to_string()) && f.contains(&"fuel_consumed".to_string()), "{f:?}");

    // A forged field, resealed: re-execution gives it away.
    let resealed = tidepool_runtime::Receipt { outcome: Outcome::Exited { code: 1 }, ..receipt.clone() }.seal();
    let f = fields(&verify(guest("wordfreq"), &resealed, &[("books", books.path())], None));
    assert_eq!(f, ["outcome.code"], "{f:?}");

    // Another algorithm, or limits no job runs under: a precise no before anything runs.
    let report = verify(guest("csv-stats"), &receipt, &[("books", books.path())], None);
    assert_eq!((fields(&report), report.rerun.is_some()), (vec!["algorithm_hash".to_string()], false));
    let mut unrunnable = receipt.clone();
    unrunnable.limits.fuel = 0;
    let report = verify(guest("wordfreq"), &unrunnable.seal(), &[("books", books.path())], None);
    assert_eq!((fields(&report), report.rerun.is_some()), (vec!["limits".to_string()], false));
    assert!(report.mismatches[0].actual.contains("fuel must be at least 1"), "{:?}", report.mismatches);

    // Claimed outputs that were altered.
    std::fs::write(ran.outputs().join("wordfreq.csv"), "word,count\nfake,1000\n").unwrap();
    std::fs::write(ran.outputs().join("extra.txt"), "planted").unwrap();
    let report = verify(guest("wordfreq"), &receipt, &[("books", books.path())], Some(&ran.outputs()));
    assert!(report.mismatches.is_empty(), "the job itself re-executes identically");
    assert!(report.output_mismatches.iter().any(|m| m == "differs: wordfreq.csv"), "{:?}", report.output_mismatches);
    assert!(report.output_mismatches.iter().any(|m| m == "extra: extra.txt"));
}

/// A receipt's `deterministic` flag follows from its outcome. A forged `false` on a successful
/// job must not excuse its results from comparison: here the outputs, the fuel and the stdout
/// are all false, and resealed.
#[test]
fn a_receipt_cannot_excuse_its_results_by_claiming_to_be_nondeterministic() {
    let books = dataset(&[("dickens.txt", BOOK.as_bytes())]);
    let ran = run("wordfreq", &Opts::default().input("books", books.path()));
    let forged = tidepool_runtime::Receipt {
        deterministic: false,
        outputs_root: alloy_primitives::B256::ZERO,
        stdout_hash: alloy_primitives::B256::ZERO,
        fuel_consumed: 1,
        ..ran.result.receipt.clone()
    }
    .seal();
    let report = verify(guest("wordfreq"), &forged, &[("books", books.path())], None);
    assert!(!report.verified() && !report.inconclusive());
    let f: Vec<&str> = report.mismatches.iter().map(|d| d.field.as_str()).collect();
    for field in ["deterministic", "outputs_root", "fuel_consumed", "stdout_hash"] {
        assert!(f.contains(&field), "{field} not in {f:?}");
    }
}

/// A receipt that claims a deterministic outcome, re-executed on a machine where the job
/// times out: neither a yes nor a proven no, but "could not be checked", with the reason.
#[test]
fn a_rerun_that_times_out_confirms_nothing() {
    let honest = run("misbehave", &Opts::default().args(&["spin"]).limits(|l| l.fuel = 5_000_000));
    assert_eq!(honest.outcome(), &Outcome::OutOfFuel);
    let mut claimed = honest.result.receipt.clone();
    claimed.outcome = Outcome::Exited { code: 0 };
    claimed.limits.fuel = u64::MAX / 2;
    claimed.limits.timeout_ms = 300;
    let report = verify(guest("misbehave"), &claimed.seal(), &[], None);
    assert_eq!(report.rerun.as_ref().map(|r| &r.outcome), Some(&Outcome::Timeout));
    assert!(!report.verified(), "a timed-out rerun proves nothing about the claimed results");
    assert!(report.inconclusive(), "{:?}", report.mismatches);
    assert!(report.unconfirmed[0].contains("timeout of 300 ms"), "{:?}", report.unconfirmed);
}

#[test]
fn a_known_manifest_is_trusted_instead_of_rescanning() {
    let books = dataset(&[("dickens.txt", BOOK.as_bytes())]);
    let plain = run("wordfreq", &Opts::default().input("books", books.path()));
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Opts::default().spec(guest("wordfreq"), &tmp.path().join("out"));
    let manifest = std::sync::Arc::new(tree::scan(books.path()).unwrap());
    spec.inputs = vec![InputSpec { manifest: Some(manifest.clone()), ..InputSpec::new("books", books.path()) }];
    let with_manifest = runtime().run(&spec).unwrap();
    assert_eq!(with_manifest.receipt.receipt_hash, plain.result.receipt.receipt_hash);
    assert_eq!(with_manifest.receipt.inputs[0].root, manifest.root());
}

/// Version-1 receipts were made by the legacy engine (wasmtime's fuel, eager NaN
/// canonicalization, a native stack limit): `verify` re-executes them on it, in version 1.
#[test]
fn version_1_receipts_verify_on_the_engine_that_made_them() {
    let books = dataset(&[("dickens.txt", BOOK.as_bytes())]);
    let tmp = tempfile::tempdir().unwrap();
    let spec = Opts::default().input("books", books.path()).spec(guest("wordfreq"), &tmp.path().join("out"));
    let v1 = runtime().run_with(&spec, tidepool_runtime::Semantics::Legacy).unwrap().receipt;
    let v2 = runtime().run(&spec_in(&spec, tmp.path(), "out2")).unwrap().receipt;
    assert_eq!((v1.version, v1.environment.is_some()), (1, false));
    assert_eq!(v2.version, 2);
    assert_ne!(v1.runtime.engine_config_hash, v2.runtime.engine_config_hash, "two engines, two identities");
    let report = verify(guest("wordfreq"), &v1, &[("books", books.path())], None);
    assert!(report.verified(), "{:?}", report.mismatches);
    assert_eq!(report.rerun.as_ref().map(|r| r.version), Some(1));
    assert!(report.notes.iter().any(|n| n.contains("compared in version 1")), "{:?}", report.notes);
    // Each version has its shape: an environment a version-1 hash cannot cover, or a version-2
    // receipt without one, is refused before anything runs.
    for (version, environment) in [(1, v2.environment.clone()), (2, None)] {
        let malformed = tidepool_runtime::Receipt { environment, ..if version == 1 { v1.clone() } else { v2.clone() } };
        let report = verify(guest("wordfreq"), &malformed.seal(), &[("books", books.path())], None);
        let fields: Vec<&str> = report.mismatches.iter().map(|d| d.field.as_str()).collect();
        assert_eq!((fields, report.rerun.is_some()), (vec!["environment"], false), "version {version}");
    }
    // A version-1 receipt from an engine this verifier cannot make says which one it needs.
    let mut other = v1.clone();
    other.runtime.engine_config_hash = alloy_primitives::B256::repeat_byte(7);
    let report = verify(guest("wordfreq"), &other.seal(), &[("books", books.path())], None);
    assert!(!report.verified());
    assert!(report.notes.iter().any(|n| n.contains("same architecture")), "{:?}", report.notes);
}

fn spec_in(spec: &tidepool_runtime::JobSpec, dir: &std::path::Path, out: &str) -> tidepool_runtime::JobSpec {
    tidepool_runtime::JobSpec { output_dir: dir.join(out), ..spec.clone() }
}

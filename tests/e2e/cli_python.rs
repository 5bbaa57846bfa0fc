//! `tidepool run` and `tidepool verify` with Python algorithms: a script or a directory with
//! `main.py`, run in the `python-3.12` environment, its receipt verified, an edited script and
//! another environment module caught, and every mistake a clear error (exit 2).

use std::path::{Path, PathBuf};

use crate::util::{dataset, module, read_json, s, tp};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python")
}

const TEXT: &str = "The tide pool, the TIDE; über Über naïve 42\nthe end\n";

#[test]
fn a_python_directory_runs_verifies_and_matches_the_rust_example() {
    let books = dataset(&[("a.txt", TEXT.as_bytes()), ("b/c.txt", b"one fish two fish\n")]);
    let work = tempfile::tempdir().unwrap();
    let input = format!("books={}", s(books.path()));
    let (out, receipt) = (work.path().join("py"), work.path().join("py.json"));
    let wordfreq = examples().join("wordfreq");
    let ran = tp(&[
        "run",
        s(&wordfreq),
        "--input",
        &input,
        "--output",
        s(&out),
        "--receipt",
        s(&receipt),
        "--",
        "--top",
        "3",
    ]);
    ran.expect_code(0);
    assert!(
        ran.stderr().contains("env       python-3.12 (module 0x"),
        "the summary names the environment:\n{}",
        ran.stderr()
    );
    assert!(ran.stderr().contains("metric    words = 15"), "progress and metrics arrive: {}", ran.stderr());
    let r = read_json(&receipt);
    assert_eq!(r["version"], 2);
    assert_eq!(r["environment"]["name"], "python-3.12");
    assert_eq!(r["environment"]["argv"][1], "/algorithm/main.py");
    assert_eq!(r["algorithm_name"], "wordfreq");

    // The Rust example on the same data writes the same files.
    let rust_out = work.path().join("rust");
    tp(&["run", "-q", s(&module("wordfreq")), "--input", &input, "--output", s(&rust_out), "--", "--top", "3"])
        .expect_code(0);
    for file in ["wordfreq.csv", "summary.json"] {
        assert_eq!(
            std::fs::read_to_string(out.join(file)).unwrap(),
            std::fs::read_to_string(rust_out.join(file)).unwrap(),
            "{file}"
        );
    }

    let verified = tp(&["verify", s(&receipt), "--algorithm", s(&wordfreq), "--input", &input, "--outputs", s(&out)]);
    verified.expect_code(0);
    assert!(verified.stdout().starts_with("verified: 0x"), "{}", verified.stdout());

    // An edited script: the receipt does not verify, and the edit is named.
    let edited = work.path().join("edited");
    std::fs::create_dir(&edited).unwrap();
    let source = std::fs::read_to_string(wordfreq.join("main.py")).unwrap();
    std::fs::write(edited.join("main.py"), source.replace("\"--top\", 100", "\"--top\", 99")).unwrap();
    let caught = tp(&["verify", s(&receipt), "--algorithm", s(&edited), "--input", &input]);
    caught.expect_code(1);
    assert!(caught.stdout().contains("NOT verified"), "{}", caught.stdout());
    assert!(caught.stdout().contains("algorithm_hash: expected"), "{}", caught.stdout());
}

#[test]
fn a_single_script_runs_as_main_py_and_another_environment_module_is_named() {
    let work = tempfile::tempdir().unwrap();
    let script = work.path().join("hello.py");
    std::fs::write(&script, "import sys\nprint('hello from', sys.argv[0])\n").unwrap();
    let receipt = work.path().join("r.json");
    let ran = tp(&["run", s(&script), "--output", s(&work.path().join("o")), "--receipt", s(&receipt)]);
    ran.expect_code(0);
    assert_eq!(ran.stdout(), "hello from /algorithm/main.py\n");
    assert_eq!(read_json(&receipt)["algorithm_name"], "hello");

    // The same environment name with another module (a valid one: a custom section appended).
    let other = work.path().join("other");
    let env = other.join("python-3.12");
    std::fs::create_dir_all(env.join("sdk")).unwrap();
    let src = tidepool_test_artifacts::environments().join("python-3.12");
    let mut wasm = std::fs::read(src.join("python-3.12.0.wasm")).unwrap();
    let pinned = tidepool_runtime::tree::blake3_b256(&wasm).to_string();
    wasm.extend_from_slice(b"\x00\x06\x05extra");
    std::fs::write(env.join("python-3.12.0.wasm"), &wasm).unwrap();
    std::fs::copy(src.join("sdk/tidepool.py"), env.join("sdk/tidepool.py")).unwrap();
    let definition = std::fs::read_to_string(src.join("environment.toml")).unwrap();
    let repinned = definition.replace(&pinned, &tidepool_runtime::tree::blake3_b256(&wasm).to_string());
    assert_ne!(definition, repinned, "the definition pins the module's BLAKE3");
    std::fs::write(env.join("environment.toml"), &repinned).unwrap();
    let caught = tp(&["verify", s(&receipt), "--algorithm", s(&script), "--environments", s(&other)]);
    caught.expect_code(1);
    assert!(caught.stdout().contains("environment.module_hash: expected"), "{}", caught.stdout());
    assert!(caught.stderr().contains("cannot be re-executed"), "{}", caught.stderr());

    // A module that is not the pinned one is refused before anything runs.
    std::fs::write(env.join("environment.toml"), &definition).unwrap();
    let refused = tp(&["run", s(&script), "--output", s(&work.path().join("o2")), "--environments", s(&other)]);
    refused.expect_code(2);
    assert!(refused.stderr().contains("pins") && refused.stderr().contains("scripts/setup.sh"), "{}", refused.stderr());
}

#[test]
fn mistakes_are_clear_errors() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("o");
    let no_main = work.path().join("algo");
    std::fs::create_dir(&no_main).unwrap();
    std::fs::write(no_main.join("helper.py"), "x = 1\n").unwrap();
    let script = work.path().join("s.py");
    std::fs::write(&script, "print(1)\n").unwrap();
    let notes = work.path().join("notes.txt");
    std::fs::write(&notes, "not code\n").unwrap();
    let empty = work.path().join("no-environments");

    let cases: [(Vec<&str>, &str); 5] = [
        (vec!["run", s(&no_main), "--output", s(&out)], "holds no main.py"),
        (vec!["run", s(&no_main), "--env", "python-3.12", "--output", s(&out)], "has no main.py"),
        (vec!["run", s(&script), "--env", "python-2.7", "--output", s(&out)], "unknown environment `python-2.7`"),
        (vec!["run", s(&notes), "--output", s(&out)], "cannot tell what runs"),
        (vec!["run", s(&script), "--environments", s(&empty), "--output", s(&out)], "scripts/setup.sh"),
    ];
    for (args, expected) in cases {
        let ran = tp(&args);
        ran.expect_code(2);
        assert!(ran.stderr().contains(expected), "{args:?}: expected `{expected}` in:\n{}", ran.stderr());
        assert!(!out.exists(), "nothing ran");
    }
    let listed = tp(&["run", s(&script), "--env", "python-2.7", "--output", s(&out)]);
    assert!(listed.stderr().contains("python-3.12"), "the error lists what is offered: {}", listed.stderr());

    // `compute` checks a Python algorithm before contacting any provider.
    let key = work.path().join("me.key");
    tp(&["keygen", "--out", s(&key)]).expect_code(0);
    let did = format!("did:op:{}", "ab".repeat(32));
    let computed = tp(&[
        "compute",
        "--provider",
        "http://127.0.0.1:9",
        "--key",
        s(&key),
        "--did",
        &did,
        "--algorithm",
        s(&no_main),
        "--output",
        s(&out),
    ]);
    computed.expect_code(2);
    assert!(computed.stderr().contains("holds no main.py"), "{}", computed.stderr());
}

//! Python algorithms on a provider: the README's story (`tidepool compute --algorithm DIR`,
//! then `tidepool verify`), what the provider says it offers, and every way an upload for an
//! environment can be wrong.

use std::path::{Path, PathBuf};

use alloy_primitives::B256;
use tidepool_provider::client::ClientError;
use tidepool_provider::client::flow::FilesAlgorithm;
use tidepool_runtime::Environments;
use tidepool_runtime::files::FileTree;

use crate::daemon::{Daemon, initialize_signed, publish, request};
use crate::util::{dataset, module, s, tp};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python").join(name)
}

/// A daemon offering the test environments (Python).
fn daemon_with_python() -> Daemon {
    let envs = tidepool_test_artifacts::environments();
    Daemon::start(&["--environments", s(&envs)])
}

fn python_wordfreq() -> FilesAlgorithm {
    let envs = Environments::load(&tidepool_test_artifacts::environments()).unwrap();
    let algorithm = envs.get("python-3.12").unwrap().load_algorithm(&example("wordfreq"), 1 << 20).unwrap();
    FilesAlgorithm::pack(&algorithm).expect("an environment algorithm")
}

fn expect(r: Result<impl std::fmt::Debug, ClientError>, status: u16, code: &str, says: &str) {
    match r {
        Err(ClientError::Api { status: s, code: c, message }) => {
            assert_eq!((s, c.as_str()), (status, code), "{message}");
            assert!(message.contains(says), "`{says}` missing from: {message}");
        }
        other => panic!("expected {status} {code}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_directory_is_computed_on_a_provider_and_its_receipt_verifies() {
    let d = daemon_with_python();
    let work = tempfile::tempdir().unwrap();
    let books = dataset(&[("a.txt", b"one fish two fish red fish blue fish\n")]);
    let did = publish(&d, &[("books", books.path())], request("fish")).await;
    // The provider says what it offers, in its description and in the asset's DDO.
    let consumer = d.consumer().await;
    let offered = &consumer.provider().environments;
    assert_eq!(offered.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["python-3.12"]);
    let ddo = consumer.ddo(did).await.unwrap();
    let environment = &ddo.compute_service("1").unwrap().provider.environment;
    assert_eq!(environment.offers, *offered);

    let (url, key, out, books_path) =
        (d.url.clone(), work.path().join("consumer.key"), work.path().join("results"), books.path().to_path_buf());
    let rust_out = work.path().join("rust");
    let (compute, verify, rust) = tokio::task::spawn_blocking(move || {
        tp(&["keygen", "--out", s(&key)]).expect_code(0);
        tp(&["faucet", "--provider", &url, "--key", s(&key)]).expect_code(0);
        let wordfreq = example("wordfreq");
        let envs = tidepool_test_artifacts::environments();
        let compute = tp(&[
            "compute",
            "--provider",
            &url,
            "--key",
            s(&key),
            "--did",
            &did.to_string(),
            "--algorithm",
            s(&wordfreq),
            "--environments",
            s(&envs),
            "--output",
            s(&out),
            "--",
            "--top",
            "2",
        ]);
        let input = format!("books={}", s(&books_path));
        let verify = tp(&[
            "verify",
            s(&out.join("receipt.json")),
            "--algorithm",
            s(&wordfreq),
            "--input",
            &input,
            "--outputs",
            s(&out.join("outputs")),
        ]);
        let rust =
            tp(&["run", "-q", s(&module("wordfreq")), "--input", &input, "--output", s(&rust_out), "--", "--top", "2"]);
        (compute, verify, rust)
    })
    .await
    .unwrap();
    compute.expect_code(0);
    assert!(compute.stderr().contains("outcome   exited with code 0"), "{}", compute.stderr());
    let receipt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.path().join("results/receipt.json")).unwrap()).unwrap();
    assert_eq!(receipt["environment"]["name"], "python-3.12");
    assert_eq!(receipt["algorithm_hash"], python_wordfreq().algorithm_hash.to_string(), "the files' tree root");
    verify.expect_code(0);
    // The same files as the Rust example's on the same data.
    rust.expect_code(0);
    assert_eq!(
        std::fs::read_to_string(work.path().join("results/outputs/wordfreq.csv")).unwrap(),
        std::fs::read_to_string(work.path().join("rust/wordfreq.csv")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_for_an_environment_are_checked() {
    let d = daemon_with_python();
    let books = dataset(&[("a.txt", b"fish")]);
    let did = publish(&d, &[("books", books.path())], request("fish")).await;
    let c = d.consumer().await;
    let good = python_wordfreq();
    let fresh = || async {
        let agreement = B256::random();
        initialize_signed(&c, did, agreement, c.signer()).await.unwrap();
        agreement
    };
    let cases: [(FilesAlgorithm, u16, &str, &str); 3] = [
        (
            FilesAlgorithm { environment: "python-2.7".into(), ..good.clone() },
            422,
            "unprocessable",
            "does not offer the environment `python-2.7` (it offers: python-3.12)",
        ),
        (FilesAlgorithm { archive: b"not an archive".to_vec(), ..good.clone() }, 400, "bad_request", "cannot be read"),
        (
            {
                let files = FileTree::single("helper.py", b"print(1)\n".to_vec()).unwrap();
                FilesAlgorithm { archive: files.to_archive(), algorithm_hash: files.root(), ..good.clone() }
            },
            422,
            "unprocessable",
            "needs a file `main.py`",
        ),
    ];
    for (files, status, code, says) in cases {
        expect(c.upload_files(fresh().await, &files).await, status, code, says);
    }
    // Signed over another tree than the one sent.
    let other = FilesAlgorithm { algorithm_hash: B256::repeat_byte(1), ..good.clone() };
    expect(c.upload_files(fresh().await, &other).await, 401, "bad_signature", "signature");
    // The right files are taken, once.
    let agreement = fresh().await;
    let uploaded = c.upload_files(agreement, &good).await.unwrap();
    assert_eq!(uploaded.algorithm_hash, good.algorithm_hash);
    expect(c.upload_files(agreement, &good).await, 409, "conflict", "uploaded");

    // A provider without environments refuses them the same way, naming what it runs.
    let plain = Daemon::start(&[]);
    let did = publish(&plain, &[("books", books.path())], request("fish")).await;
    let c = plain.consumer().await;
    assert!(c.provider().environments.is_empty());
    let agreement = B256::random();
    initialize_signed(&c, did, agreement, c.signer()).await.unwrap();
    expect(c.upload_files(agreement, &good).await, 422, "unprocessable", "(it offers: modules only)");
}

/// An algorithm published for an environment (`tidepool publish --algorithm DIR`): its DDO
/// names the environment and its hash is the files' tree root; a consumer runs it by DID and
/// the receipt names both. Publishing for an environment the provider does not offer, or
/// naming an environment for a dataset, is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_published_python_algorithm_names_its_environment_and_runs_by_did() {
    use tidepool_provider::client::flow::{AlgorithmChoice, ComputeRequest};
    use tidepool_provider::protocol::ddo::AssetKind;

    let d = daemon_with_python();
    let books = dataset(&[("a.txt", b"one fish two fish red fish blue fish\n")]);
    let did = publish(&d, &[("books", books.path())], request("fish")).await;
    let work = tempfile::tempdir().unwrap();
    let (url, key) = (d.url.clone(), work.path().join("author.key"));
    let published = tokio::task::spawn_blocking(move || {
        tp(&["keygen", "--out", s(&key)]).expect_code(0);
        let envs = tidepool_test_artifacts::environments();
        tp(&[
            "publish",
            "--provider",
            &url,
            "--key",
            s(&key),
            "--name",
            "wordfreq-py",
            "--algorithm",
            s(&example("wordfreq")),
            "--environments",
            s(&envs),
        ])
    })
    .await
    .unwrap();
    published.expect_code(0);
    let algorithm: tidepool_provider::protocol::ddo::Did = published.stdout().trim().parse().unwrap();

    let c = d.consumer().await;
    let ddo = c.ddo(algorithm).await.unwrap();
    assert_eq!(ddo.metadata.kind, AssetKind::Algorithm);
    assert_eq!(ddo.metadata.environment.as_deref(), Some("python-3.12"));
    let hash = python_wordfreq().algorithm_hash;
    assert_eq!(ddo.metadata.algorithm_hash, Some(hash), "the files' tree root");

    let out = work.path().join("results");
    let req = ComputeRequest {
        did,
        algorithm: AlgorithmChoice::Published(algorithm),
        args: vec!["--top".into(), "1".into()],
        not_before: None,
        output_dir: out.clone(),
        wait: std::time::Duration::from_secs(300),
    };
    let outcome = c.compute(&req, |_| {}).await.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert!(outcome.receipt.outcome.is_success(), "{}", outcome.receipt.outcome);
    assert_eq!(outcome.receipt.algorithm_hash, hash);
    assert_eq!(outcome.receipt.environment.as_ref().map(|e| e.name.as_str()), Some("python-3.12"));
    assert_eq!(std::fs::read_to_string(out.join("outputs/wordfreq.csv")).unwrap(), "word,count\nfish,4\n");
    // The job ran in a worker process (the default), on the code the daemon compiled into
    // its cache at start: the worker, which may only read the cache, found it there.
    let log = d.log();
    assert!(!log.contains("could not write the compile cache"), "the worker compiled again:\n{log}");

    // Refused: an environment not offered (422), an environment for a dataset (400).
    let files = [("algorithm".to_string(), example("wordfreq"))];
    let mut req = request("old python");
    req.kind = AssetKind::Algorithm;
    req.environment = Some("python-2.7".into());
    expect(c.publish_dirs(&files, &req).await, 422, "unprocessable", "does not offer the environment `python-2.7`");
    let operator = d.operator().await;
    let mut req = request("books for python");
    req.environment = Some("python-3.12".into());
    let data = [("books".to_string(), books.path().to_path_buf())];
    expect(operator.publish_dirs(&data, &req).await, 400, "bad_request", "only an algorithm names an environment");
}

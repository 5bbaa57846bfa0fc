//! The client commands against a real daemon, and `tidepool demo`.

use crate::daemon::Daemon;
use crate::util::{dataset, module, s, tp};

#[tokio::test(flavor = "multi_thread")]
async fn the_client_commands_run_the_whole_flow() {
    let d = Daemon::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let books = dataset(&[("a.txt", b"one fish two fish red fish blue fish")]);
    let provider_key = d.key_file();
    let consumer_key = work.path().join("consumer.key");
    let url = d.url.clone();
    let (wf, books_path) = (module("wordfreq"), books.path().to_path_buf());
    let out = work.path().join("results");
    // The commands block; run them off the async runtime.
    let (did, compute, verify, balance, outsider) = tokio::task::spawn_blocking(move || {
        let keygen = tp(&["keygen", "--out", s(&consumer_key)]);
        keygen.expect_code(0);
        assert!(keygen.stdout().trim().starts_with("0x"));
        let dataset = format!("books={}", s(&books_path));
        let publish = tp(&[
            "publish",
            "--provider",
            &url,
            "--key",
            s(&provider_key),
            "--name",
            "fish",
            "--dataset",
            &dataset,
            "--price",
            "2",
        ]);
        publish.expect_code(0);
        let did = publish.stdout().trim().to_string();
        tp(&["faucet", "--provider", &url, "--key", s(&consumer_key)]).expect_code(0);
        let compute = tp(&[
            "compute",
            "--provider",
            &url,
            "--key",
            s(&consumer_key),
            "--did",
            &did,
            "--algorithm",
            s(&wf),
            "--output",
            s(&out),
            "--",
            "--top",
            "2",
        ]);
        let verify = tp(&[
            "verify",
            s(&out.join("receipt.json")),
            "--algorithm",
            s(&wf),
            "--input",
            &dataset,
            "--outputs",
            s(&out.join("outputs")),
        ]);
        let balance = tp(&["balance", "--provider", &url, "--key", s(&provider_key)]);
        let outsider =
            tp(&["publish", "--provider", &url, "--key", s(&consumer_key), "--name", "x", "--dataset", &dataset]);
        (did, compute, verify, balance, outsider)
    })
    .await
    .unwrap();
    assert!(did.starts_with("did:op:"), "{did}");
    compute.expect_code(0);
    for line in
        ["outcome   exited with code 0", "payment", "signature, hash, outputs and logs checked", "asset     did:op:"]
    {
        assert!(compute.stderr().contains(line), "`{line}` missing:\n{}", compute.stderr());
    }
    assert_eq!(
        std::fs::read_to_string(work.path().join("results/outputs/wordfreq.csv")).unwrap(),
        "word,count\nfish,4\nblue,1\n"
    );
    let receipt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.path().join("results/receipt.json")).unwrap()).unwrap();
    assert_eq!(compute.stdout().trim(), receipt["receipt_hash"].as_str().unwrap());
    verify.expect_code(0);
    let fuel = receipt["fuel_consumed"].as_u64().unwrap();
    assert_eq!(balance.stdout().trim(), (u128::from(fuel) * 2).to_string(), "the provider earned fuel × 2");
    outsider.expect_code(2);
    assert!(outsider.stderr().contains("403"), "{}", outsider.stderr());
}

#[test]
fn the_demo_runs_the_whole_story() {
    let ran = tp(&["demo", "--algorithm", s(&module("wordfreq"))]);
    ran.expect_code(0);
    for line in [
        "published did:op:",
        "agreement 0x",
        "keeper event: PaymentReleased",
        "payment split",
        "verified: re-executing",
    ] {
        assert!(ran.stderr().contains(line), "`{line}` missing from the demo:\n{}", ran.stderr());
    }
}

/// `tidepool demo --chain`: the same story with the agreement on a local chain it starts.
#[test]
fn the_demo_runs_on_a_local_chain() {
    let ran = tp(&["demo", "--chain", "--algorithm", s(&module("wordfreq"))]);
    ran.expect_code(0);
    for line in
        ["contracts deployed", "keeper event: PaymentReleased", "the escrow committed 0x", "verified: re-executing"]
    {
        assert!(ran.stderr().contains(line), "`{line}` missing from the demo:\n{}", ran.stderr());
    }
}

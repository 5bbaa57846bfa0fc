//! `tidepool gc` on a real daemon's data directory: it refuses while the daemon runs, removes
//! exactly the blobs no row names (past `--min-age`), and the provider works on afterwards.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use alloy_primitives::B256;
use tidepool_provider::store::blobs::Blobs;

use crate::daemon::{Daemon, publish, request};
use crate::provider_flow::compute;
use crate::util::{dataset, s, tp};

const BOOK: &[u8] = b"Tide pools and tide lines; pools of tide.\n";

fn stored(blobs: &Blobs) -> BTreeSet<B256> {
    blobs.stored().unwrap().0.into_iter().map(|b| b.hash).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_removes_exactly_the_unnamed_blobs_and_only_with_the_daemon_stopped() {
    let mut d = Daemon::start(&[]);
    let books = dataset(&[("book.txt", BOOK)]);
    let did = publish(&d, &[("books", books.path())], request("books")).await;
    let consumer = d.consumer().await;
    let out = tempfile::tempdir().unwrap();
    let outcome = consumer.compute(&compute(did, "wordfreq", &[], out.path()), |_| {}).await.unwrap();

    let running = tp(&["gc", "--data-dir", s(&d.data)]);
    running.expect_code(2);
    assert!(running.stderr().contains("in use by another tidepool process"), "{}", running.stderr());

    d.kill();
    let blobs = Blobs::open(&d.data).unwrap();
    let in_use = stored(&blobs);
    // What failed requests leave: blobs no row names, one stored two hours ago.
    let old = blobs.put_bytes(b"an upload whose request failed").unwrap();
    let young = blobs.put_bytes(b"another, a minute ago").unwrap();
    let old_path = d.data.join("blobs").join(&hex::encode(old)[..2]).join(hex::encode(old));
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::open(&old_path).unwrap().set_modified(two_hours_ago).unwrap();
    std::fs::write(d.data.join("blobs").join("notes.txt"), b"an operator's file").unwrap();

    let dry = tp(&["gc", "--data-dir", s(&d.data), "--dry-run"]);
    dry.expect_code(0);
    assert!(dry.stdout().contains(&format!("would remove {old}")), "{}", dry.stdout());
    assert!(!dry.stdout().contains(&young.to_string()), "a young blob is kept: {}", dry.stdout());
    assert!(dry.stdout().contains("1 unnamed but younger than 60m"), "{}", dry.stdout());
    assert!(old_path.exists(), "a dry run removes nothing");

    // With no minimum age, every unnamed blob goes, and only those.
    let ran = tp(&["gc", "--data-dir", s(&d.data), "--min-age", "0s"]);
    ran.expect_code(0);
    assert!(ran.stdout().contains("1 other files left alone"), "{}", ran.stdout());
    assert_eq!(stored(&blobs), in_use, "removed: the two unnamed blobs, nothing the provider uses\n{}", ran.stdout());
    assert!(d.data.join("blobs/notes.txt").exists());

    // Everything named is still there: the job's results (also the files of the asset its
    // outputs were published as) download and check out, and the dataset computes again.
    d.restart();
    let results = consumer.results(&outcome.job.job_id).await.unwrap();
    let dest = tempfile::tempdir().unwrap();
    for entry in results.results.iter().filter(|e| e.hash.is_some()) {
        let path = dest.path().join(entry.index.to_string());
        consumer.download(&outcome.job.job_id, entry.index, &path).await.unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(Some(tidepool_runtime::tree::blake3_b256(&bytes)), entry.hash, "{}", entry.name);
    }
    let again = tempfile::tempdir().unwrap();
    let second = consumer.compute(&compute(did, "wordfreq", &[], again.path()), |_| {}).await.unwrap();
    assert_eq!(second.receipt.outputs_root, outcome.receipt.outputs_root, "the same dataset, the same outputs");
}

/// Whatever cannot tell which blobs are in use makes gc refuse, removing nothing (not even a
/// stopped daemon's temporary files): no record of the daemon's database, another database
/// than the recorded one, no database, one that is not a provider's, a cluster's shared stores,
/// a directory with no store.
#[test]
fn gc_refuses_when_it_cannot_tell_what_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::path::absolute(dir.path().join("data")).unwrap();
    let blobs = Blobs::open(&data).unwrap();
    let blob = blobs.put_bytes(b"a blob of unknown use").unwrap();
    let leftover = data.join("tmp").join("upload-in-flight");
    std::fs::write(&leftover, b"half an upload").unwrap();
    let data_dir = s(&data);
    let refused = |args: &[&str], message: &str| {
        let mut all = vec!["gc", "--min-age", "0s"];
        all.extend(args);
        let ran = tp(&all);
        ran.expect_code(2);
        assert!(ran.stderr().contains(message), "{all:?}: {}", ran.stderr());
    };
    refused(&["--data-dir", data_dir], "has no record of its daemon's database");
    refused(&["--data-dir", s(dir.path())], "holds no blob store");
    let cluster = "a cluster's blobs are in its shared bucket";
    refused(&["--data-dir", data_dir, "--database", "postgres://tidepool@127.0.0.1:1/tidepool"], cluster);
    refused(&["--data-dir", data_dir, "--blobs", "http://127.0.0.1:1/bucket"], cluster);

    let db = data.join("tidepool.db");
    tidepool_provider::store::lock::record_database(&data, &db).unwrap();
    refused(&["--data-dir", data_dir], "no database at");
    let other = dir.path().join("other.db");
    refused(&["--data-dir", data_dir, "--database", s(&other)], "not ");
    refused(&["--data-dir", data_dir, "--database", s(&other)], &format!("with the database {}", db.display()));
    // A SQLite file without the provider's tables.
    let created = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute('CREATE TABLE t (x TEXT)')"])
        .arg(&db)
        .status()
        .unwrap();
    assert!(created.success());
    refused(&["--data-dir", data_dir], "is not a provider's database (no table assets");

    assert_eq!(stored(&blobs), BTreeSet::from([blob]), "nothing removed");
    assert!(leftover.exists(), "a refused gc leaves the temporary files");
}

//! `Db` on a real SQLite file: group commit, writers that give up or are rolled back, the journal
//! and sync modes.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_share_commits_and_an_abandoned_one_leaves_no_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(&tmp.path().join("t.db")).await.unwrap();
    let insert =
        |n: i64| sqlx::query("INSERT INTO nonces (address, nonce) VALUES ($1, $2)").bind(format!("a{n}")).bind(n);
    let writers = (0..64).map(|n| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut tx = db.write().await.unwrap();
            insert(n).execute(&mut *tx).await.unwrap();
            if n % 4 == 3 {
                // Changed its mind: dropped without commit, in the middle of others' batch.
                drop(tx);
            } else if n % 4 == 2 {
                // A failing statement: the error reaches the writer, who gives up.
                assert!(insert(n).execute(&mut *tx).await.is_err(), "a duplicate key fails");
            } else {
                tx.commit().await.unwrap();
            }
        })
    });
    for w in writers.collect::<Vec<_>>() {
        w.await.unwrap();
    }
    let kept: Vec<i64> =
        sqlx::query_scalar("SELECT nonce FROM nonces ORDER BY nonce").fetch_all(db.pool()).await.unwrap();
    assert_eq!(kept, (0..64).filter(|n| n % 4 < 2).collect::<Vec<_>>(), "exactly the committed writers' rows");
    // A later writer still works, and sees everything committed.
    let mut tx = db.write().await.unwrap();
    insert(100).execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM nonces").fetch_one(db.pool()).await.unwrap();
    assert_eq!(count, 33);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_goes_away_while_queued_leaves_no_one_waiting() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(&tmp.path().join("t.db")).await.unwrap();
    let insert =
        |n: i64| sqlx::query("INSERT INTO nonces (address, nonce) VALUES ($1, $2)").bind(format!("a{n}")).bind(n);
    let mut first = db.write().await.unwrap();
    insert(1).execute(&mut *first).await.unwrap();
    // A second writer queues for the connection, then its caller goes away (an HTTP
    // client disconnecting cancels its handler).
    let queued = tokio::spawn({
        let db = db.clone();
        async move { db.write().await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    queued.abort();
    let _ = queued.await;
    // The first writer's commit, and a lone writer after it, complete (a leaked queue
    // count or an unfinished batch would leave them waiting for a writer that never comes).
    let done = tokio::time::timeout(Duration::from_secs(30), async {
        first.commit().await.unwrap();
        let mut tx = db.write().await.unwrap();
        insert(2).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    })
    .await;
    assert!(done.is_ok(), "the writers were left waiting");
    let kept: Vec<i64> =
        sqlx::query_scalar("SELECT nonce FROM nonces ORDER BY nonce").fetch_all(db.pool()).await.unwrap();
    assert_eq!(kept, vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sqlite_rolled_back_fails_its_writers_and_no_one_after() {
    let tmp = tempfile::tempdir().unwrap();
    // The batch must stay open while the writers are arranged around it, however slow the
    // machine: a batch older than the age limit is committed by whoever ends a turn.
    let db = Db::open_with(&tmp.path().join("t.db"), Duration::from_secs(60), DEFAULT_BUSY_TIMEOUT).await.unwrap();
    let insert =
        |n: i64| sqlx::query("INSERT INTO nonces (address, nonce) VALUES ($1, $2)").bind(format!("a{n}")).bind(n);
    let queued = |n: usize| {
        let db = db.clone();
        async move {
            while db.writer.as_ref().expect("SQLite").queued.load(std::sync::atomic::Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    // Writer 1 ends its turn while others wait for the connection, so it waits for the
    // batch. Writer 2's single statement ends the whole transaction, as a full disk or an
    // I/O error does, and fails. Writer 3 comes next.
    let mut first = db.write().await.unwrap();
    insert(1).execute(&mut *first).await.unwrap();
    let second = tokio::spawn({
        let db = db.clone();
        async move {
            let mut tx = db.writer.as_ref().expect("SQLite").begin(false).await.unwrap();
            sqlx::query("ROLLBACK").execute(&mut *tx).await.unwrap();
            drop(tx); // as after a failed statement
        }
    });
    queued(1).await;
    let third = tokio::spawn({
        let db = db.clone();
        async move {
            let mut tx = db.write().await.unwrap();
            insert(3).execute(&mut *tx).await.unwrap();
            tx.commit().await
        }
    });
    queued(2).await;
    // Writer 1's change is gone, and it is told so; writer 3's is kept, and it is told so.
    assert!(first.commit().await.is_err(), "told that its change was kept, though it was rolled back");
    second.await.unwrap();
    assert!(third.await.unwrap().is_ok(), "told that its change failed, though it was kept");
    let kept: Vec<i64> =
        sqlx::query_scalar("SELECT nonce FROM nonces ORDER BY nonce").fetch_all(db.pool()).await.unwrap();
    assert_eq!(kept, vec![3]);
}

#[tokio::test]
async fn the_database_is_wal_and_fully_synchronous() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(&tmp.path().join("t.db")).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(db.pool()).await.unwrap();
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(db.pool()).await.unwrap();
    assert_eq!((mode.as_str(), sync), ("wal", 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_counts_at_once_and_is_committed_with_the_next_batch_or_on_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let count = |db: Db| async move {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM nonces").fetch_one(db.pool()).await.unwrap()
    };
    // A batch that stays open as long as the test needs.
    let db = Db::open_with(&tmp.path().join("t.db"), Duration::from_secs(60), DEFAULT_BUSY_TIMEOUT).await.unwrap();
    let nonces = nonces::Nonces::new(db.clone());
    let a = alloy_primitives::Address::repeat_byte(1);
    assert!(nonces.accept(a, 5).await.unwrap());
    // Not committed yet (other connections do not see it)...
    assert_eq!(count(db.clone()).await, 0, "written behind, not committed");
    // ...but it counts at once: a replay is refused before the nonce is durable, also by
    // another `Nonces` on the same database.
    assert!(!nonces.accept(a, 5).await.unwrap(), "replay");
    assert!(!nonces::Nonces::new(db.clone()).accept(a, 5).await.unwrap(), "replay through another handle");
    // The next writer's commit takes it along.
    let mut tx = db.write().await.unwrap();
    sqlx::query("INSERT INTO nonces (address, nonce) VALUES ('other', 1)").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(db.clone()).await, 2, "committed with the next writer");

    // A nonce accepted while a writer holds the connection does not wait for it, and that
    // writer's commit takes it along.
    let mut first = db.write().await.unwrap();
    sqlx::query("INSERT INTO nonces (address, nonce) VALUES ('third', 1)").execute(&mut *first).await.unwrap();
    let accepted = tokio::time::timeout(Duration::from_secs(20), nonces.accept(a, 6)).await;
    assert!(matches!(accepted, Ok(Ok(true))), "accepting waited for the writer: {accepted:?}");
    first.commit().await.unwrap();
    let kept: i64 = sqlx::query_scalar("SELECT nonce FROM nonces WHERE address <> 'other' AND address <> 'third'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!((count(db.clone()).await, kept), (3, 6), "both committed, together");

    // A reopened database refuses what was committed.
    drop((nonces, db));
    let db = Db::open(&tmp.path().join("t.db")).await.unwrap();
    assert!(!nonces::Nonces::new(db.clone()).accept(a, 6).await.unwrap(), "replay after a restart");
    assert!(nonces::Nonces::new(db.clone()).accept(a, 7).await.unwrap());

    // With nobody writing after it, it is committed once a batch would be old enough.
    let db = Db::open(&tmp.path().join("u.db")).await.unwrap();
    assert!(nonces::Nonces::new(db.clone()).accept(a, 1).await.unwrap());
    let committed = tokio::time::timeout(Duration::from_secs(30), async {
        while count(db.clone()).await == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(committed.is_ok(), "a lone nonce was never committed");
}

#[tokio::test]
async fn reads_see_each_commit_and_cannot_write() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(&tmp.path().join("t.db")).await.unwrap();
    let count =
        || async { sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM nonces").fetch_one(db.pool()).await.unwrap() };
    for n in 1..=3 {
        db.execute(sqlx::query("INSERT INTO nonces (address, nonce) VALUES ($1, 1)").bind(format!("a{n}")))
            .await
            .unwrap();
        assert_eq!(count().await, n, "a read after a commit sees it");
    }
    let write = sqlx::query("DELETE FROM nonces").execute(db.pool()).await;
    assert!(write.is_err(), "a read connection wrote: {write:?}");
    assert_eq!(count().await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonces_whose_batch_fails_are_written_once_the_database_is_free() {
    use sqlx::ConnectOptions;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.db");
    let db = Db::open_with_busy_timeout(&path, Duration::from_millis(50)).await.unwrap();
    // Another process's writer holds the database.
    let mut other = SqliteConnectOptions::new().filename(&path).connect().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
    let a = alloy_primitives::Address::repeat_byte(3);
    assert!(nonces::Nonces::new(db.clone()).accept(a, 1).await.unwrap());
    // The nonce's own batch is tried (and fails: busy) meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let written = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM nonces").fetch_one(db.pool()).await.unwrap();
            if n == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(written.is_ok(), "the nonce was never written after its batch failed");
}

//! The embedded keeper's semantics, on a real SQLite file.

use super::*;
use crate::keeper::ConditionInit;
use crate::protocol::events::EventName;
use crate::protocol::template::{self, Terms};

async fn keeper() -> (tempfile::TempDir, EmbeddedKeeper) {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(&tmp.path().join("k.db")).await.unwrap();
    (tmp, EmbeddedKeeper::new(db, 1337))
}

fn new_agreement(k: &EmbeddedKeeper, id: u8, timeouts: &[(ConditionName, u64)]) -> NewAgreement {
    let terms = Terms {
        did: Did(B256::repeat_byte(9)),
        provider: Address::repeat_byte(0xaa),
        consumer: Address::repeat_byte(0xcc),
        price_per_fuel: U256::from(2),
        max_fuel: 1_000,
    };
    let t: BTreeMap<ConditionName, u64> = timeouts.iter().copied().collect();
    let specs = template::condition_specs(k.controllers(), &terms, &t);
    NewAgreement {
        id: B256::repeat_byte(id),
        did: terms.did,
        template_id: template::template_id(),
        consumer: terms.consumer,
        provider: terms.provider,
        price_per_fuel: terms.price_per_fuel,
        max_fuel: terms.max_fuel,
        conditions: specs
            .iter()
            .map(|c| ConditionInit {
                name: c.name,
                key: c.key,
                values_hash: terms.values_hash(c.name),
                timeout: c.timeout,
                dependencies: c.dependencies.clone(),
            })
            .collect(),
    }
}

#[tokio::test]
async fn the_happy_path_moves_tokens_and_logs_events_in_order() {
    let (_t, k) = keeper().await;
    let mut notes = k.subscribe();
    let (provider, consumer) = (Address::repeat_byte(0xaa), Address::repeat_byte(0xcc));
    k.credit(consumer, U256::from(5_000)).await.unwrap();
    let a = k.create_agreement(new_agreement(&k, 1, &[])).await.unwrap();
    assert!(matches!(k.create_agreement(new_agreement(&k, 1, &[])).await, Err(KeeperError::AlreadyExists(_))));
    assert!(matches!(k.grant_compute(a.id).await, Err(KeeperError::DependencyUnfulfilled { .. })));
    assert!(matches!(k.lock_payment(a.id, provider).await, Err(KeeperError::NotParty { .. })));
    k.lock_payment(a.id, consumer).await.unwrap();
    assert!(matches!(k.lock_payment(a.id, consumer).await, Err(KeeperError::AlreadyFulfilled { .. })));
    assert_eq!(k.balance(consumer).await.unwrap(), U256::from(3_000));
    k.fulfill_upload(a.id, B256::repeat_byte(4)).await.unwrap();
    k.grant_compute(a.id).await.unwrap();
    let payout = k.release_payment(a.id, B256::repeat_byte(5), 300).await.unwrap();
    assert_eq!(payout, Payout { provider_amount: U256::from(600), consumer_refund: U256::from(1_400) });
    assert_eq!(k.balance(provider).await.unwrap(), U256::from(600));
    assert_eq!(k.balance(consumer).await.unwrap(), U256::from(4_400));
    assert!(matches!(k.refund_payment(a.id, consumer).await, Err(KeeperError::Closed { .. })));
    k.publish_output(a.id, Did(B256::repeat_byte(6))).await.unwrap();
    let names: Vec<EventName> =
        k.events_after(0, Some(a.id), 100).await.unwrap().into_iter().map(|e| e.name()).collect();
    assert_eq!(
        names,
        [
            EventName::ExecuteAgreement,
            EventName::PaymentLocked,
            EventName::FulfillUpload,
            EventName::ComputeGranted,
            EventName::PaymentReleased,
            EventName::OutputPublished
        ]
    );
    assert_eq!(notes.try_recv().map(|n| (n.id, n.agreement)), Ok((1, a.id)), "subscribers hear of events");
    let released = k.events_after(0, Some(a.id), 100).await.unwrap().into_iter().find_map(|e| match e.event {
        AgreementEvent::PaymentReleased(r) => Some(r),
        _ => None,
    });
    assert_eq!(released.map(|r| (r.receiptHash, r.providerAmount)), Some((B256::repeat_byte(5), U256::from(600))));
    let a = k.agreement(a.id).await.unwrap();
    assert_eq!((a.state, a.escrow), (AgreementState::Released, U256::ZERO));
}

#[tokio::test]
async fn event_queries_use_their_indexes() {
    let (_t, k) = keeper().await;
    for (sql, index) in
        [(rows::EVENTS_OF_AGREEMENT, "events_by_agreement"), (rows::EVENTS_AFTER, "INTEGER PRIMARY KEY")]
    {
        let plan = crate::store::query_plan(&k.db, sql).await;
        assert!(plan.iter().any(|d| d.contains(index)), "{sql}: {plan:?}");
    }
    // And both work, with and without an agreement.
    let a = k.create_agreement(new_agreement(&k, 7, &[])).await.unwrap();
    let b = k.create_agreement(new_agreement(&k, 8, &[])).await.unwrap();
    let of_b = k.events_after(0, Some(b.id), 10).await.unwrap();
    assert_eq!(of_b.iter().map(|e| e.agreement_id).collect::<Vec<_>>(), vec![b.id]);
    assert_eq!(k.events_after(0, None, 10).await.unwrap().len(), 2);
    assert!(k.events_after(of_b[0].id, Some(a.id), 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn refunds_need_a_missed_deadline() {
    let (_t, k) = keeper().await;
    let consumer = Address::repeat_byte(0xcc);
    k.credit(consumer, U256::from(2_000)).await.unwrap();
    let a = k
        .create_agreement(new_agreement(&k, 2, &[(ConditionName::GrantCompute, 1), (ConditionName::ReleasePayment, 1)]))
        .await
        .unwrap();
    k.lock_payment(a.id, consumer).await.unwrap();
    assert!(matches!(k.refund_payment(a.id, consumer).await, Err(KeeperError::NotRefundable(_))));
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    assert!(matches!(
        k.grant_compute(a.id).await,
        Err(KeeperError::TimedOut { .. }) | Err(KeeperError::DependencyUnfulfilled { .. })
    ));
    assert_eq!(k.refund_payment(a.id, consumer).await.unwrap(), U256::from(2_000));
    assert_eq!(k.balance(consumer).await.unwrap(), U256::from(2_000));
    assert!(matches!(k.release_payment(a.id, B256::ZERO, 1).await, Err(KeeperError::Closed { .. })));
}

#[tokio::test]
async fn insufficient_funds_change_nothing() {
    let (_t, k) = keeper().await;
    let consumer = Address::repeat_byte(0xcc);
    k.credit(consumer, U256::from(10)).await.unwrap();
    let a = k.create_agreement(new_agreement(&k, 3, &[])).await.unwrap();
    assert!(matches!(k.lock_payment(a.id, consumer).await, Err(KeeperError::InsufficientBalance { .. })));
    let a = k.agreement(a.id).await.unwrap();
    assert!(!a.is_fulfilled(ConditionName::LockPayment), "the transaction rolled back");
    assert_eq!(k.balance(consumer).await.unwrap(), U256::from(10));
}

/// Two "nodes" (keepers with their own connection pools) on one real PostgreSQL, racing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_postgresql_never_spend_twice_nor_fulfil_twice() {
    let pg = tidepool_test_artifacts::cluster::Postgres::start();
    let a_node = EmbeddedKeeper::new(Db::open_url(&pg.url).await.unwrap(), 1337);
    let b_node = EmbeddedKeeper::new(Db::open_url(&pg.url).await.unwrap(), 1337);
    let (provider, consumer) = (Address::repeat_byte(0xaa), Address::repeat_byte(0xcc));
    // Enough for exactly one escrow (max_fuel 1000 × price 2), credited from both nodes at once.
    let credits = futures_util::future::join_all((0..10).map(|i| {
        if i % 2 == 0 { a_node.credit(consumer, U256::from(200)) } else { b_node.credit(consumer, U256::from(200)) }
    }))
    .await;
    assert!(credits.iter().all(Result::is_ok), "{credits:?}");
    assert_eq!(a_node.balance(consumer).await.unwrap(), U256::from(2_000), "no credit was lost");
    let first = a_node.create_agreement(new_agreement(&a_node, 1, &[])).await.unwrap();
    let second = b_node.create_agreement(new_agreement(&b_node, 2, &[])).await.unwrap();
    // The same agreement created on both nodes at once: one of them.
    let (x, y) = tokio::join!(
        a_node.create_agreement(new_agreement(&a_node, 3, &[])),
        b_node.create_agreement(new_agreement(&b_node, 3, &[]))
    );
    assert_eq!(x.is_ok() as u8 + y.is_ok() as u8, 1, "{x:?} {y:?}");
    // Both escrows locked at once, each on another node: the balance covers one.
    let (x, y) = tokio::join!(a_node.lock_payment(first.id, consumer), b_node.lock_payment(second.id, consumer));
    assert_eq!(x.is_ok() as u8 + y.is_ok() as u8, 1, "{x:?} {y:?}");
    assert!(matches!(x.err().or(y.err()), Some(KeeperError::InsufficientBalance { .. })));
    assert_eq!(a_node.balance(consumer).await.unwrap(), U256::ZERO);
    let locked = if a_node.agreement(first.id).await.unwrap().escrow > U256::ZERO { first.id } else { second.id };
    a_node.fulfill_upload(locked, B256::repeat_byte(4)).await.unwrap();
    // Granted and released from both nodes at once: each exactly once.
    let (x, y) = tokio::join!(a_node.grant_compute(locked), b_node.grant_compute(locked));
    assert_eq!(x.is_ok() as u8 + y.is_ok() as u8, 1, "{x:?} {y:?}");
    let (x, y) = tokio::join!(
        a_node.release_payment(locked, B256::repeat_byte(5), 300),
        b_node.release_payment(locked, B256::repeat_byte(5), 300)
    );
    assert_eq!(x.is_ok() as u8 + y.is_ok() as u8, 1, "{x:?} {y:?}");
    assert_eq!(b_node.balance(provider).await.unwrap(), U256::from(600), "paid once");
    assert_eq!(b_node.balance(consumer).await.unwrap(), U256::from(1_400), "refunded once");
    // Every event once, in commit order, and the other node heard of them.
    let names: Vec<EventName> =
        b_node.events_after(0, Some(locked), 100).await.unwrap().into_iter().map(|e| e.name()).collect();
    assert_eq!(
        names,
        [
            EventName::ExecuteAgreement,
            EventName::PaymentLocked,
            EventName::FulfillUpload,
            EventName::ComputeGranted,
            EventName::PaymentReleased
        ]
    );
    let mut heard = a_node.subscribe();
    b_node.publish_output(locked, Did(B256::repeat_byte(6))).await.unwrap();
    let note = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match heard.recv().await {
                Ok(n) if n.agreement == locked => return n,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("node A hears of node B's event");
    assert_eq!(a_node.events_after(note.id - 1, None, 1).await.unwrap()[0].name(), EventName::OutputPublished);
}

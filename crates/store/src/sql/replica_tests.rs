//! Several stores on one PostgreSQL database, as several `bellows server`
//! replicas use it: each hears the others' changes, reports and deadlines
//! apply once whichever replica takes them, racing writes conflict instead
//! of overwriting, and the timer lease is held by one at a time.

use std::time::Duration;

use super::at_rest_tests::hw;
use super::tests::workflow;
use super::*;
use bellows_testkit::postgres::{TestDatabase, database};

async fn replica(db: &TestDatabase) -> SqlStore {
    SqlStore::open_postgres(
        &db.url,
        SecretKey::from_bytes(&[1; 32]),
        &PoolSettings::default(),
    )
    .await
    .unwrap()
}

/// Waits (bounded) for `check` to hold, asking every 20 ms.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within 10 s");
}

#[tokio::test]
async fn a_replica_hears_what_another_changed() {
    let db = database();
    let (a, b) = (replica(&db).await, replica(&db).await);
    let mut heard = b.subscribe();
    let mac: MacAddr = "02:00:00:00:0a:01".parse().unwrap();
    a.push_hardware(hw("m1", "02:00:00:00:0a:01"))
        .await
        .unwrap();
    // The index the packet paths read follows, without a query.
    eventually("B's index has m1", || b.index().by_mac(mac).is_some()).await;
    let change = tokio::time::timeout(Duration::from_secs(10), heard.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (change.kind, change.id.as_str(), change.op),
        (ChangeKind::Hardware, "m1", ChangeOp::Upsert)
    );
    // A workflow made through A wakes B's subscribers (its worker streams).
    a.create_workflow(&workflow("wf1", "02:00:00:00:0a:01"))
        .await
        .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let c = heard.recv().await.unwrap();
            if c.kind == ChangeKind::Workflow {
                return c;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(change.id, "wf1");
    a.delete_workflow("wf1").await.unwrap();
    a.delete_hardware("m1").await.unwrap();
    eventually("B's index drops m1", || b.index().by_mac(mac).is_none()).await;
    // A replica does not hear itself twice.
    let mut own = a.subscribe();
    a.push_hardware(hw("m2", "02:00:00:00:0a:02"))
        .await
        .unwrap();
    assert_eq!(own.recv().await.unwrap().id, "m2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(own.try_recv().is_err(), "its own announcement came back");
}

/// The same report (a worker retrying through another replica) and a
/// racing deadline: the action starts once, finishes once.
#[tokio::test]
async fn reports_racing_on_two_replicas_apply_once() {
    let db = database();
    let (a, b) = (Arc::new(replica(&db).await), Arc::new(replica(&db).await));
    let worker = "02:00:00:00:0b:01";
    a.push_hardware(hw("m1", worker)).await.unwrap();
    for round in 0..10 {
        let id = format!("wf{round}");
        a.create_workflow(&workflow(&id, worker)).await.unwrap();
        let start = Transition::ActionStarted {
            task: "a".into(),
            action: "one".into(),
            worker: worker.into(),
            attempt: 1,
            at: now_ms(),
        };
        let finish = Transition::ActionFinished {
            task: "a".into(),
            action: "one".into(),
            worker: worker.into(),
            attempt: 1,
            outcome: bellows_model::workflow::Outcome::Success,
            exit_code: Some(0),
            message: None,
            output: None,
            at: now_ms(),
        };
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (id, start) = (id.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                store.apply_transition(&id, &start).await
            }));
        }
        for t in tasks {
            // Every copy is accepted (a repeat changes nothing) or refused.
            let _ = t.await.unwrap();
        }
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = if i % 2 == 0 { b.clone() } else { a.clone() };
            let (id, finish) = (id.clone(), finish.clone());
            tasks.push(tokio::spawn(async move {
                store.apply_transition(&id, &finish).await
            }));
        }
        for t in tasks {
            let _ = t.await.unwrap();
        }
        let events = a.workflow_events(&id).await.unwrap();
        let kinds: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_value(&e.event).unwrap()["type"].to_string())
            .collect();
        let count = |what: &str| kinds.iter().filter(|k| k.contains(what)).count();
        assert_eq!(count("action_started"), 1, "{kinds:?}");
        assert_eq!(count("action_finished"), 1, "{kinds:?}");
        assert_eq!(
            a.workflow(&id).await.unwrap().unwrap().state,
            State::Success
        );
    }
}

/// Two replicas pushing records that claim one MAC at the same moment:
/// one wins, the other is told why, and the MAC has one owner.
#[tokio::test]
async fn racing_claims_on_one_mac_leave_one_owner() {
    let db = database();
    let (a, b) = (Arc::new(replica(&db).await), Arc::new(replica(&db).await));
    for round in 0..20u8 {
        let mac = format!("02:00:00:00:0c:{round:02x}");
        let (ma, mb) = (mac.clone(), mac.clone());
        let (sa, sb) = (a.clone(), b.clone());
        let one =
            tokio::spawn(async move { sa.push_hardware(hw(&format!("a{round}"), &ma)).await });
        let two =
            tokio::spawn(async move { sb.push_hardware(hw(&format!("b{round}"), &mb)).await });
        let results = [one.await.unwrap(), two.await.unwrap()];
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(matches!(e, StoreError::Conflict { .. }), "{e:?}");
            }
        }
        let owner = a
            .hardware_by_mac(mac.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(results.iter().flatten().any(|p| p.hardware.id == owner.id));
    }
}

/// One replica runs the timers; when it goes, another takes over within
/// seconds.
#[tokio::test]
async fn the_timer_lease_is_held_once_and_moves_when_its_holder_goes() {
    let db = database();
    let (a, b) = (replica(&db).await, replica(&db).await);
    eventually("one of the two leads", || {
        a.leads_timers() || b.leads_timers()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(a.leads_timers() != b.leads_timers(), "exactly one leads");
    let (leader, other) = if a.leads_timers() { (a, b) } else { (b, a) };
    leader.close().await;
    drop(leader);
    eventually("the other takes over", || other.leads_timers()).await;
}

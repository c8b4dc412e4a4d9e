use super::*;
use crate::{LogEntry, MACHINE_LOG_KEEP};
use bellows_model::template::{Strictness, Template};
use bellows_model::workflow::Outcome;
use bellows_model::{State, TransitionError};

pub(super) fn hw(id: &str, mac: &str, ip: &str) -> Hardware {
    let doc = serde_json::json!({
        "id": id,
        "network": {"interfaces": [{"dhcp": {"mac": mac, "ip": {"address": ip, "netmask": "255.255.255.0"}}}]}
    });
    Hardware::from_value(doc).unwrap()
}

/// Where a test's store lives, kept for as long as the test runs: a
/// temporary data directory, or a database of its own on PostgreSQL.
pub(super) enum Home {
    Sqlite(tempfile::TempDir),
    Postgres(bellows_testkit::postgres::TestDatabase),
}

impl Home {
    pub(super) fn new(backend: Backend) -> Home {
        match backend {
            Backend::Sqlite => Home::Sqlite(tempfile::tempdir().unwrap()),
            Backend::Postgres => Home::Postgres(bellows_testkit::postgres::database()),
        }
    }

    /// Opens (again) the store that lives here.
    pub(super) async fn open(&self) -> SqlStore {
        let key = SecretKey::from_bytes(&[1; 32]);
        match self {
            Home::Sqlite(dir) => SqlStore::open_sqlite(dir.path(), key).await.unwrap(),
            Home::Postgres(db) => SqlStore::open_postgres(&db.url, key, &PoolSettings::default())
                .await
                .unwrap(),
        }
    }
}

/// A fresh store on `backend`.
pub(super) async fn store(backend: Backend) -> (Home, SqlStore) {
    let home = Home::new(backend);
    let store = home.open().await;
    (home, store)
}

/// Runs each listed test (an `async fn(Backend)`) once on each backend, as
/// `sqlite::name` and `postgres::name`: the store tests are the contract
/// every backend keeps.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::sql::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::sql::Backend::Postgres).await
            })*
        }
    };
}
pub(super) use on_both_backends;

const TMPL: &str = "version: \"0.1\"\nname: t\nglobal_timeout: 60\ntasks:\n  - name: a\n    worker: \"{{.device_1}}\"\n    actions:\n      - name: one\n        image: busybox\n";

pub(crate) fn workflow(id: &str, worker: &str) -> Workflow {
    let rendered = TMPL.replace("{{.device_1}}", worker);
    let t = Template::parse(&rendered, Strictness::Rendered).unwrap();
    Workflow::new(
        id.into(),
        "tmpl".into(),
        [("device_1".to_string(), worker.to_string())].into(),
        None,
        rendered,
        &t,
        now_ms(),
    )
}

async fn hardware_push_get_and_lookups(backend: Backend) {
    let (_d, s) = store(backend).await;
    let pushed = s
        .push_hardware(hw("m1", "aa:bb:cc:00:00:01", "10.0.0.1"))
        .await
        .unwrap();
    assert!(pushed.created);
    let mac: MacAddr = "AA-BB-CC-00-00-01".parse().unwrap();
    assert_eq!(s.hardware_by_mac(mac).await.unwrap().unwrap().id, "m1");
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    assert_eq!(s.hardware_by_ip(ip).await.unwrap().unwrap().id, "m1");
    assert_eq!(s.hardware("m1").await.unwrap().unwrap(), pushed.hardware);
    assert!(s.hardware("nope").await.unwrap().is_none());

    // Same id: update, new IP replaces the old reservation.
    let again = s
        .push_hardware(hw("m1", "aa:bb:cc:00:00:01", "10.0.0.2"))
        .await
        .unwrap();
    assert!(!again.created);
    assert!(s.hardware_by_ip(ip).await.unwrap().is_none());
    // No id, known MAC: updates that record.
    let by_mac = s
        .push_hardware(hw("", "aa:bb:cc:00:00:01", "10.0.0.3"))
        .await
        .unwrap();
    assert_eq!(by_mac.hardware.id, "m1");
    assert!(!by_mac.created);
    // No id, new MAC: a fresh uuid.
    let fresh = s
        .push_hardware(hw("", "aa:bb:cc:00:00:02", "10.0.0.4"))
        .await
        .unwrap();
    assert!(fresh.created);
    assert_eq!(fresh.hardware.id.len(), 36);
    assert_eq!(s.list_hardware().await.unwrap().len(), 2);
}

async fn duplicate_mac_or_ip_is_a_conflict_and_changes_nothing(backend: Backend) {
    let (_d, s) = store(backend).await;
    s.push_hardware(hw("m1", "aa:bb:cc:00:00:01", "10.0.0.1"))
        .await
        .unwrap();
    let before = s.list_hardware().await.unwrap();
    let e = s
        .push_hardware(hw("m2", "aa:bb:cc:00:00:01", "10.0.0.9"))
        .await
        .unwrap_err();
    match e {
        StoreError::Conflict { field, message } => {
            assert_eq!(field.as_deref(), Some("network.interfaces[0].dhcp.mac"));
            assert!(message.contains("m1"), "{message}");
        }
        other => panic!("expected conflict, got {other}"),
    }
    let e = s
        .push_hardware(hw("m2", "aa:bb:cc:00:00:02", "10.0.0.1"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Conflict { field: Some(ref f), .. } if f.ends_with("ip.address"))
    );
    assert_eq!(s.list_hardware().await.unwrap(), before);
    assert!(s.hardware("m2").await.unwrap().is_none());
}

async fn replace_and_delete_hardware(backend: Backend) {
    let (_d, s) = store(backend).await;
    assert!(matches!(
        s.replace_hardware("m1", hw("", "aa:bb:cc:00:00:01", "10.0.0.1"))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    s.push_hardware(hw("m1", "aa:bb:cc:00:00:01", "10.0.0.1"))
        .await
        .unwrap();
    let replaced = s
        .replace_hardware("m1", hw("", "aa:bb:cc:00:00:05", "10.0.0.5"))
        .await
        .unwrap();
    assert_eq!(replaced.id, "m1");
    assert!(
        s.hardware_by_mac("aa:bb:cc:00:00:01".parse().unwrap())
            .await
            .unwrap()
            .is_none()
    );

    // An unfinished workflow for its MAC blocks deletion.
    s.create_workflow(&workflow("wf1", "aa:bb:cc:00:00:05"))
        .await
        .unwrap();
    assert!(matches!(
        s.delete_hardware("m1").await,
        Err(StoreError::Conflict { .. })
    ));
    s.delete_workflow("wf1").await.unwrap();
    s.delete_hardware("m1").await.unwrap();
    assert!(s.hardware("m1").await.unwrap().is_none());
    assert!(
        s.hardware_by_mac("aa:bb:cc:00:00:05".parse().unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        s.delete_hardware("m1").await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn templates_crud_with_unique_names(backend: Backend) {
    let (_d, s) = store(backend).await;
    let t = s.create_template("hello", TMPL).await.unwrap();
    assert!(matches!(
        s.create_template("hello", TMPL).await,
        Err(StoreError::Conflict { field: Some(ref f), .. }) if f == "name"
    ));
    assert_eq!(s.template(&t.id).await.unwrap().unwrap(), t);
    assert_eq!(s.template("hello").await.unwrap().unwrap(), t);
    let other = s.create_template("other", TMPL).await.unwrap();
    assert!(matches!(
        s.update_template(&other.id, Some("hello"), TMPL).await,
        Err(StoreError::Conflict { .. })
    ));
    let updated = s
        .update_template(&t.id, Some("renamed"), "x")
        .await
        .unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.data.as_str()),
        ("renamed", "x")
    );
    assert_eq!(s.list_templates().await.unwrap().len(), 2);
    s.delete_template(&t.id).await.unwrap();
    assert!(matches!(
        s.delete_template(&t.id).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// `worker` starts attempt `attempt` of action `one` of task `a` (the
/// template of [`workflow`]).
fn started(worker: &str, attempt: u32) -> Transition {
    Transition::ActionStarted {
        task: "a".into(),
        action: "one".into(),
        worker: worker.into(),
        attempt,
        at: now_ms(),
    }
}

/// `worker` reports attempt 1 of that action a success.
fn succeeded(worker: &str) -> Transition {
    Transition::ActionFinished {
        task: "a".into(),
        action: "one".into(),
        worker: worker.into(),
        attempt: 1,
        outcome: Outcome::Success,
        exit_code: Some(0),
        message: None,
        output: None,
        at: now_ms(),
    }
}

async fn workflow_transitions_are_logged_and_illegal_ones_change_nothing(backend: Backend) {
    let (_d, s) = store(backend).await;
    let worker = "aa:bb:cc:00:00:01";
    s.create_workflow(&workflow("wf1", worker)).await.unwrap();
    let start = started(worker, 1);
    let running = s.apply_transition("wf1", &start).await.unwrap();
    assert_eq!(running.state, State::Running);
    let before_events = s.workflow_events("wf1").await.unwrap();
    assert_eq!(
        before_events.len(),
        3,
        "created, action_started, state_changed"
    );
    // Starting again is a repeat: it writes nothing.
    assert_eq!(s.apply_transition("wf1", &start).await.unwrap(), running);
    // Starting out of turn is refused and leaves workflow and log untouched.
    let mut second = start.clone();
    if let Transition::ActionStarted { attempt, .. } = &mut second {
        *attempt = 2;
    }
    assert!(matches!(
        s.apply_transition("wf1", &second).await,
        Err(StoreError::Transition(
            TransitionError::BadActionState { .. }
        ))
    ));
    assert_eq!(s.workflow("wf1").await.unwrap().unwrap(), running);
    assert_eq!(s.workflow_events("wf1").await.unwrap(), before_events);
    let finish = succeeded(worker);
    let done = s.apply_transition("wf1", &finish).await.unwrap();
    assert_eq!(done.state, State::Success);
    let events = s.workflow_events("wf1").await.unwrap();
    assert_eq!(events.len(), 5);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    let filter = WorkflowFilter {
        state: Some(State::Success),
        worker: Some(worker.to_uppercase()),
        active: false,
    };
    assert_eq!(s.list_workflows(&filter).await.unwrap().len(), 1);
    assert!(matches!(
        s.apply_transition("nope", &finish).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// Many reports in one transaction (the group commit): each applies as
/// alone would, in the batch's order for one workflow; a refused one is
/// undone alone and the others are written.
async fn a_batch_of_reports_applies_each_as_alone_and_refuses_alone(backend: Backend) {
    let (_d, s) = store(backend).await;
    let (w1, w2) = ("aa:bb:cc:00:00:01", "aa:bb:cc:00:00:02");
    s.create_workflow(&workflow("wf-b", w2)).await.unwrap();
    s.create_workflow(&workflow("wf-a", w1)).await.unwrap();
    let mut changes = s.subscribe();
    let batch = vec![
        ("wf-b".to_string(), started(w2, 1)),
        // Out of turn: refused, and nothing of it stays.
        ("wf-a".to_string(), started(w1, 2)),
        ("wf-a".to_string(), started(w1, 1)),
        ("wf-a".to_string(), succeeded(w1)),
        ("nope".to_string(), started(w1, 1)),
    ];
    let results = s.apply_transitions(&batch).await;
    assert_eq!(results.len(), 5);
    assert_eq!(results[0].as_ref().unwrap().state, State::Running);
    assert!(
        matches!(results[1], Err(StoreError::Transition(_))),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2].as_ref().unwrap().state, State::Running);
    assert_eq!(results[3].as_ref().unwrap().state, State::Success);
    assert!(matches!(results[4], Err(StoreError::NotFound { .. })));
    assert_eq!(
        s.workflow("wf-a").await.unwrap().unwrap().state,
        State::Success
    );
    // The same events as one report at a time: created, started, state,
    // finished, state.
    assert_eq!(s.workflow_events("wf-a").await.unwrap().len(), 5);
    assert_eq!(s.workflow_events("wf-b").await.unwrap().len(), 3);
    // Each workflow written was announced once (after the commit); the one
    // whose action only started, quietly (nobody's next action changed).
    let mut announced = Vec::new();
    while let Ok(Ok(c)) = tokio::time::timeout(Duration::from_millis(200), changes.recv()).await {
        announced.push((c.id, c.quiet));
    }
    announced.sort();
    assert_eq!(
        announced,
        [("wf-a".to_string(), false), ("wf-b".to_string(), true)]
    );
    // An empty batch writes nothing and answers nothing.
    assert!(s.apply_transitions(&[]).await.is_empty());
}

async fn writes_publish_changes_after_commit(backend: Backend) {
    let (_d, s) = store(backend).await;
    let mut rx = s.subscribe();
    s.push_hardware(hw("m1", "aa:bb:cc:00:00:01", "10.0.0.1"))
        .await
        .unwrap();
    let _ = s
        .push_hardware(hw("m2", "aa:bb:cc:00:00:01", "10.0.0.2"))
        .await; // refused: no change
    s.delete_hardware("m1").await.unwrap();
    let first = rx.recv().await.unwrap();
    assert_eq!(
        (first.kind, first.id.as_str(), first.op),
        (ChangeKind::Hardware, "m1", ChangeOp::Upsert)
    );
    let second = rx.recv().await.unwrap();
    assert_eq!((second.id.as_str(), second.op), ("m1", ChangeOp::Delete));
    assert!(rx.try_recv().is_err(), "a refused write publishes nothing");
}

async fn data_survives_reopen(backend: Backend) {
    let home = Home::new(backend);
    {
        let s = home.open().await;
        s.push_hardware(hw("m1", "aa:bb:cc:00:00:01", "10.0.0.1"))
            .await
            .unwrap();
        s.create_template("hello", TMPL).await.unwrap();
        s.create_workflow(&workflow("wf1", "aa:bb:cc:00:00:01"))
            .await
            .unwrap();
        // Dropped without close(): like a crash, minus the kill.
    }
    let s = home.open().await;
    assert!(s.hardware("m1").await.unwrap().is_some());
    assert!(s.template("hello").await.unwrap().is_some());
    assert_eq!(s.workflow_events("wf1").await.unwrap().len(), 1);
}

async fn concurrent_writers_queue_instead_of_failing(backend: Backend) {
    let (_d, s) = store(backend).await;
    let s = Arc::new(s);
    let mut tasks = Vec::new();
    for i in 0..40u8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.push_hardware(hw(
                &format!("m{i}"),
                &format!("aa:bb:cc:00:01:{i:02x}"),
                &format!("10.0.1.{}", i + 1),
            ))
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(s.list_hardware().await.unwrap().len(), 40);
}

async fn machine_logs_keep_the_newest_per_machine(backend: Backend) {
    let (_d, s) = store(backend).await;
    let line = |machine: &str, i: i64| LogEntry {
        machine: machine.into(),
        at: i,
        source: "10.0.0.1".into(),
        facility: 1,
        severity: 6,
        hostname: String::new(),
        app: "ipxe".into(),
        message: format!("line {i}"),
    };
    let batch: Vec<LogEntry> = (0..MACHINE_LOG_KEEP + 5).map(|i| line("m1", i)).collect();
    s.append_logs(&batch).await.unwrap();
    s.append_logs(&[line("m2", 1)]).await.unwrap();
    let all = s.machine_logs("m1", u32::MAX).await.unwrap();
    assert_eq!(all.len() as i64, MACHINE_LOG_KEEP);
    assert_eq!(all[0].entry.message, "line 5", "oldest dropped first");
    let tail = s.machine_logs("m1", 2).await.unwrap();
    assert_eq!(
        tail.iter().map(|r| r.entry.at).collect::<Vec<_>>(),
        [MACHINE_LOG_KEEP + 3, MACHINE_LOG_KEEP + 4]
    );
    assert_eq!(s.machine_logs("m2", 10).await.unwrap().len(), 1);
    assert!(s.machine_logs("nobody", 10).await.unwrap().is_empty());
}

fn log_line(machine: &str, i: i64) -> LogEntry {
    LogEntry {
        machine: machine.into(),
        at: i,
        source: "10.0.0.1".into(),
        facility: 1,
        severity: 6,
        hostname: String::new(),
        app: "app".into(),
        message: format!("{machine} line {i}"),
    }
}

async fn log_rows(s: &SqlStore) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM machine_log")
        .fetch_one(&s.pool)
        .await
        .unwrap()
}

/// The attack of issue 12: syslog from many invented addresses, each
/// under its own per-machine cap, grew the database without bound. All
/// unknown senders now share one bucket; a known machine keeps its own.
async fn unknown_senders_share_one_bucket_and_known_machines_keep_theirs(backend: Backend) {
    let (_home, s) = store(backend).await;
    let s = s.with_log_limits(LogLimits {
        per_machine: 100,
        unknown_senders: 50,
        total: 10_000,
    });
    for round in 0..10 {
        let mut batch: Vec<LogEntry> = (0..40)
            .map(|sender| log_line(&format!("ip:10.9.{round}.{sender}"), round))
            .collect();
        batch.push(log_line("m1", round));
        s.append_logs(&batch).await.unwrap();
    }
    // 400 lines from 400 addresses: 50 kept, the newest.
    assert_eq!(log_rows(&s).await, 50 + 10);
    assert_eq!(s.machine_logs("m1", u32::MAX).await.unwrap().len(), 10);
    assert!(s.machine_logs("ip:10.9.0.1", 10).await.unwrap().is_empty());
    let newest = s.machine_logs("ip:10.9.9.39", 10).await.unwrap();
    assert_eq!(newest.len(), 1, "the latest senders' lines are kept");
    // Known machines still have their own cap, not the bucket's.
    let many: Vec<LogEntry> = (0..150).map(|i| log_line("m2", i)).collect();
    s.append_logs(&many).await.unwrap();
    assert_eq!(s.machine_logs("m2", u32::MAX).await.unwrap().len(), 100);
    assert_eq!(s.machine_logs("m1", u32::MAX).await.unwrap().len(), 10);
}

async fn the_total_budget_drops_the_oldest_lines_first(backend: Backend) {
    let (_home, s) = store(backend).await;
    let s = s.with_log_limits(LogLimits {
        per_machine: 100,
        unknown_senders: 100,
        total: 250,
    });
    for machine in ["m1", "m2", "m3", "m4", "m5"] {
        let batch: Vec<LogEntry> = (0..80).map(|i| log_line(machine, i)).collect();
        s.append_logs(&batch).await.unwrap();
    }
    assert_eq!(log_rows(&s).await, 250);
    assert!(s.machine_logs("m1", 10).await.unwrap().is_empty());
    assert_eq!(s.machine_logs("m2", 100).await.unwrap().len(), 10);
    assert_eq!(s.machine_logs("m5", 100).await.unwrap().len(), 80);
    assert_eq!(
        LogLimits::default(),
        LogLimits {
            per_machine: MACHINE_LOG_KEEP,
            unknown_senders: crate::UNKNOWN_SENDERS_LOG_KEEP,
            total: crate::TOTAL_LOG_KEEP,
        }
    );
}

async fn bmc_records_keep_the_password_apart(backend: Backend) {
    use crate::{BmcRecord, BmcSecret};
    let (_d, s) = store(backend).await;
    let record = BmcRecord {
        hardware_id: "m1".into(),
        address: "10.0.0.9".into(),
        port: Some(623),
        protocol: "ipmi".into(),
        username: "admin".into(),
        insecure_tls: false,
        power_state: None,
        power_checked_at: None,
        power_error: None,
    };
    let secret = BmcSecret("hunter2".into());
    assert!(
        matches!(
            s.put_bmc(&record, &secret).await,
            Err(StoreError::NotFound { .. })
        ),
        "needs hardware"
    );
    s.push_hardware(hw("m1", "aa:bb:cc:00:00:01", "10.0.0.1"))
        .await
        .unwrap();
    s.put_bmc(&record, &secret).await.unwrap();
    let shown = s.bmc("m1").await.unwrap().unwrap();
    assert_eq!(shown, record);
    assert!(!serde_json::to_string(&shown).unwrap().contains("hunter2"));
    assert!(!format!("{:?}", s.bmc_with_secret("m1").await.unwrap()).contains("hunter2"));
    assert_eq!(
        s.bmc_with_secret("m1").await.unwrap().unwrap().1.0,
        "hunter2"
    );
    s.set_power_state("m1", Some("on"), None, 5).await.unwrap();
    assert_eq!(
        s.bmc("m1").await.unwrap().unwrap().power_state.as_deref(),
        Some("on")
    );
    s.set_power_state("m1", None, Some("timeout"), 6)
        .await
        .unwrap();
    let after = s.bmc("m1").await.unwrap().unwrap();
    assert_eq!(
        (after.power_state.as_deref(), after.power_error.as_deref()),
        (Some("on"), Some("timeout"))
    );
    assert_eq!(s.list_bmcs().await.unwrap().len(), 1);
    // Deleting the machine deletes its BMC record.
    s.delete_hardware("m1").await.unwrap();
    assert!(s.bmc("m1").await.unwrap().is_none());
    assert!(matches!(
        s.delete_bmc("m1").await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn action_logs_follow_and_inventory_round_trips(backend: Backend) {
    let (_d, s) = store(backend).await;
    let worker = "aa:bb:cc:00:00:09";
    s.create_workflow(&workflow("wfl", worker)).await.unwrap();
    let line = |action: &str, n: usize| ActionLogLine {
        workflow_id: "wfl".into(),
        task: "a".into(),
        action: action.into(),
        attempt: 1,
        stream: "stdout".into(),
        at: n as i64,
        line: format!("{action} line {n}"),
    };
    let mut batch: Vec<ActionLogLine> = (0..5).map(|n| line("one", n)).collect();
    batch.push(line("two", 5));
    // A line for a workflow that does not exist is skipped, not an error.
    let mut ghost = line("one", 6);
    ghost.workflow_id = "ghost".into();
    batch.push(ghost);
    s.append_action_logs(&batch).await.unwrap();
    let all = s
        .action_logs(
            "wfl",
            &ActionLogQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 6);
    let latest_two = s
        .action_logs(
            "wfl",
            &ActionLogQuery {
                limit: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(latest_two[1].line.line, "two line 5");
    let only_one = s
        .action_logs(
            "wfl",
            &ActionLogQuery {
                action: Some("one".into()),
                after: all[1].seq,
                limit: 100,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        only_one
            .iter()
            .map(|r| r.line.line.as_str())
            .collect::<Vec<_>>(),
        ["one line 2", "one line 3", "one line 4"]
    );
    assert!(matches!(
        s.put_inventory(&InventoryRecord {
            hardware_id: "nobody".into(),
            worker: worker.into(),
            facts: serde_json::json!({}),
            updated_at: 1,
        })
        .await,
        Err(StoreError::NotFound { .. })
    ));
    s.push_hardware(hw("m9", worker, "10.0.0.9")).await.unwrap();
    let rec = InventoryRecord {
        hardware_id: "m9".into(),
        worker: worker.into(),
        facts: serde_json::json!({"cpu": {"count": 2}}),
        updated_at: 7,
    };
    s.put_inventory(&rec).await.unwrap();
    assert_eq!(s.inventory("m9").await.unwrap(), Some(rec));
    s.delete_workflow("wfl").await.unwrap();
    assert!(
        s.action_logs(
            "wfl",
            &ActionLogQuery {
                limit: 100,
                ..Default::default()
            }
        )
        .await
        .unwrap()
        .is_empty()
    );
}

async fn toggle_allow_netboot_turns_pxe_on_at_creation_and_off_at_success(backend: Backend) {
    let (_d, s) = store(backend).await;
    let worker = "aa:bb:cc:00:00:0a";
    s.push_hardware(hw("mt", worker, "10.0.0.10"))
        .await
        .unwrap();
    let allow = |h: &Hardware| {
        h.network.interfaces[0]
            .netboot
            .as_ref()
            .and_then(|n| n.allow_pxe)
    };
    let mut wf = workflow("wft", worker);
    wf.boot_options.toggle_allow_netboot = true;
    s.create_workflow(&wf).await.unwrap();
    assert_eq!(allow(&s.hardware("mt").await.unwrap().unwrap()), Some(true));
    let mac: MacAddr = worker.parse().unwrap();
    assert_eq!(
        s.index().by_mac(mac).map(|h| allow(&h)),
        Some(Some(true)),
        "the index sees it at once"
    );
    let start = started(worker, 1);
    s.apply_transition("wft", &start).await.unwrap();
    assert_eq!(allow(&s.hardware("mt").await.unwrap().unwrap()), Some(true));
    let finish = succeeded(worker);
    s.apply_transition("wft", &finish).await.unwrap();
    assert_eq!(
        allow(&s.hardware("mt").await.unwrap().unwrap()),
        Some(false)
    );
    assert_eq!(s.index().by_mac(mac).map(|h| allow(&h)), Some(Some(false)));

    // The same through a batch of reports (the group commit).
    let worker = "aa:bb:cc:00:00:0b";
    s.push_hardware(hw("mt2", worker, "10.0.0.11"))
        .await
        .unwrap();
    let mut wf = workflow("wft2", worker);
    wf.boot_options.toggle_allow_netboot = true;
    s.create_workflow(&wf).await.unwrap();
    let results = s
        .apply_transitions(&[
            ("wft2".to_string(), started(worker, 1)),
            ("wft2".to_string(), succeeded(worker)),
        ])
        .await;
    assert_eq!(results[1].as_ref().unwrap().state, State::Success);
    assert_eq!(
        allow(&s.hardware("mt2").await.unwrap().unwrap()),
        Some(false)
    );
    let mac: MacAddr = worker.parse().unwrap();
    assert_eq!(s.index().by_mac(mac).map(|h| allow(&h)), Some(Some(false)));
}

/// The ids `list_workflows` gives for unfinished workflows of `worker`
/// (all workers when None).
async fn unfinished_ids(s: &SqlStore, worker: Option<&str>) -> Vec<String> {
    let filter = WorkflowFilter {
        worker: worker.map(str::to_string),
        active: true,
        ..Default::default()
    };
    let listed = s.list_workflows(&filter).await.unwrap();
    listed.into_iter().map(|w| w.id).collect()
}

/// The dispatch path's listing (on SQLite answered from memory) follows
/// every kind of write at once, in creation order, keeps nothing a
/// refused write did, and is the same after a restart.
async fn unfinished_listing_follows_every_write(backend: Backend) {
    let home = Home::new(backend);
    let s = home.open().await;
    let (a, b) = ("aa:bb:cc:00:00:01", "aa:bb:cc:00:00:02");
    let mut first = workflow("wf-2", a);
    first.created_at -= 10;
    s.create_workflow(&first).await.unwrap();
    s.create_workflow(&workflow("wf-1", a)).await.unwrap();
    s.create_workflow(&workflow("wf-3", b)).await.unwrap();
    assert_eq!(unfinished_ids(&s, Some(a)).await, ["wf-2", "wf-1"]);
    // Worker ids compare case-insensitively.
    assert_eq!(unfinished_ids(&s, Some(&b.to_uppercase())).await, ["wf-3"]);
    assert_eq!(unfinished_ids(&s, None).await, ["wf-2", "wf-1", "wf-3"]);
    // A running workflow is still listed, with its new state.
    s.apply_transition("wf-2", &started(a, 1)).await.unwrap();
    let running = s
        .list_workflows(&WorkflowFilter {
            state: Some(State::Running),
            active: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0], s.workflow("wf-2").await.unwrap().unwrap());
    // A refused report changes nothing; a finished workflow leaves.
    assert!(s.apply_transition("wf-1", &succeeded(a)).await.is_err());
    let results = s
        .apply_transitions(&[("wf-2".to_string(), succeeded(a))])
        .await;
    assert_eq!(results[0].as_ref().unwrap().state, State::Success);
    assert_eq!(unfinished_ids(&s, Some(a)).await, ["wf-1"]);
    s.delete_workflow("wf-3").await.unwrap();
    assert!(unfinished_ids(&s, Some(b)).await.is_empty());
    assert_eq!(unfinished_ids(&s, None).await, ["wf-1"]);
    // What is stored, not what was remembered, after a restart.
    s.close().await;
    let s = home.open().await;
    assert_eq!(unfinished_ids(&s, None).await, ["wf-1"]);
    assert_eq!(
        s.list_workflows(&WorkflowFilter::default())
            .await
            .unwrap()
            .len(),
        2
    );
}

/// The metrics' count: one row per state that has workflows, following
/// every write, and commits are timed.
async fn workflows_are_counted_by_state(backend: Backend) {
    let home = Home::new(backend);
    let s = home.open().await;
    assert!(s.count_workflows_by_state().await.unwrap().is_empty());
    let a = "aa:bb:cc:00:00:01";
    for id in ["wf-1", "wf-2", "wf-3"] {
        s.create_workflow(&workflow(id, a)).await.unwrap();
    }
    s.apply_transition("wf-1", &started(a, 1)).await.unwrap();
    s.apply_transition("wf-1", &succeeded(a)).await.unwrap();
    let mut counts = s.count_workflows_by_state().await.unwrap();
    counts.sort_by_key(|(state, _)| state.as_str());
    assert_eq!(counts, [(State::Pending, 2), (State::Success, 1)]);
    // Five writes, each committed through `commit` and timed.
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("commit_seconds", "", s.commit_latency());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let count: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("commit_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_default();
    assert!(count >= 5, "{text}");
}

/// A machine's timeline: in order, the newest kept when it grows, its own
/// apart from other machines', gone with the machine.
async fn boot_timelines_keep_the_newest_steps_per_machine(backend: Backend) {
    use bellows_model::timeline::{BootEvent, Step};
    let (_d, s) = store(backend).await;
    s.push_hardware(hw("m1", "aa:bb:cc:00:00:01", "10.0.0.1"))
        .await
        .unwrap();
    let event = |i: i64| BootEvent {
        at: i,
        step: if i % 2 == 0 {
            Step::DhcpOffer
        } else {
            Step::DhcpAck
        },
        detail: format!("step {i}"),
    };
    let mut batch: Vec<(String, BootEvent)> = (0..crate::BOOT_EVENTS_PER_MACHINE + 50)
        .map(|i| ("m1".to_string(), event(i)))
        .collect();
    batch.push(("m2".to_string(), event(7)));
    s.append_boot_events(&batch).await.unwrap();
    let kept = s.boot_events("m1", 1_000).await.unwrap();
    assert_eq!(kept.len() as i64, crate::BOOT_EVENTS_PER_MACHINE);
    assert_eq!(kept[0], event(50), "the oldest are dropped first");
    assert_eq!(
        kept.last(),
        Some(&event(crate::BOOT_EVENTS_PER_MACHINE + 49))
    );
    let newest = s.boot_events("m1", 3).await.unwrap();
    assert_eq!(newest.len(), 3);
    assert_eq!(newest[2], *kept.last().unwrap());
    assert_eq!(s.boot_events("m2", 10).await.unwrap(), [event(7)]);
    s.delete_hardware("m1").await.unwrap();
    assert!(s.boot_events("m1", 10).await.unwrap().is_empty());
}

/// A batch bigger than one statement (2,048 rows on SQLite, 225 on
/// PostgreSQL) keeps every machine's newest steps, in order.
async fn a_timeline_batch_spanning_statements_keeps_order(backend: Backend) {
    use bellows_model::timeline::{BootEvent, Step};
    let (_d, s) = store(backend).await;
    let event = |i: i64| BootEvent {
        at: i,
        step: Step::Tftp,
        detail: format!("{i}"),
    };
    let batch: Vec<(String, BootEvent)> = (0..2_200)
        .map(|i| (format!("m{}", i % 2), event(i)))
        .collect();
    s.append_boot_events(&batch).await.unwrap();
    for m in 0..2 {
        let kept = s.boot_events(&format!("m{m}"), 1_000).await.unwrap();
        let all: Vec<BootEvent> = (0..2_200).filter(|i| i % 2 == m).map(event).collect();
        let expected = &all[all.len() - crate::BOOT_EVENTS_PER_MACHINE as usize..];
        assert_eq!(kept, expected);
    }
}

/// Inventories stored in a group: the last one given for a machine wins,
/// one for an unknown machine is left out, the others are all stored.
async fn inventories_in_a_group_keep_the_last_per_machine(backend: Backend) {
    let (_d, s) = store(backend).await;
    s.push_hardware(hw("m1", "aa:bb:cc:00:00:01", "10.0.0.1"))
        .await
        .unwrap();
    s.push_hardware(hw("m2", "aa:bb:cc:00:00:02", "10.0.0.2"))
        .await
        .unwrap();
    let rec = |id: &str, n: i64| InventoryRecord {
        hardware_id: id.into(),
        worker: format!("w-{id}"),
        facts: serde_json::json!({"n": n}),
        updated_at: n,
    };
    s.put_inventories(&[rec("m1", 1), rec("nobody", 2), rec("m2", 3), rec("m1", 4)])
        .await
        .unwrap();
    assert_eq!(s.inventory("m1").await.unwrap(), Some(rec("m1", 4)));
    assert_eq!(s.inventory("m2").await.unwrap(), Some(rec("m2", 3)));
    assert_eq!(s.inventory("nobody").await.unwrap(), None);
    // And again: an update, not a second row.
    s.put_inventories(&[rec("m2", 5)]).await.unwrap();
    assert_eq!(s.inventory("m2").await.unwrap(), Some(rec("m2", 5)));
}

async fn rules_keep_their_order_and_counter_and_enrolment_happens_once(backend: Backend) {
    use bellows_model::discovery::rule::Rule;
    use bellows_model::discovery::{discovered_record, hardware_state, mark_enrolled};
    let (_d, s) = store(backend).await;
    let rule = |y: &str| Rule::parse(y).unwrap();
    assert!(s.put_rule(&rule("name: b\npriority: 1\n")).await.unwrap());
    assert!(s.put_rule(&rule("name: a\npriority: 9\n")).await.unwrap());
    assert!(s.put_rule(&rule("name: c\npriority: 1\n")).await.unwrap());
    assert_eq!(s.next_rule_counter("b").await.unwrap(), 1);
    assert_eq!(s.next_rule_counter("b").await.unwrap(), 2);
    // Replacing a rule keeps its count.
    assert!(!s.put_rule(&rule("name: b\npriority: 2\n")).await.unwrap());
    let names: Vec<(String, u64)> = s
        .list_rules()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.rule.name, r.enrolled))
        .collect();
    assert_eq!(
        names,
        [
            ("c".to_string(), 0),
            ("b".to_string(), 2),
            ("a".to_string(), 0)
        ]
    );
    assert!(matches!(
        s.next_rule_counter("nope").await,
        Err(StoreError::NotFound { .. })
    ));
    s.delete_rule("a").await.unwrap();
    assert!(s.rule("a").await.unwrap().is_none());
    assert!(matches!(
        s.delete_rule("a").await,
        Err(StoreError::NotFound { .. })
    ));

    let mac = "52:54:00:be:00:01".parse().unwrap();
    let found = discovered_record(mac, None, &[], Default::default(), 1);
    s.push_hardware(found.clone()).await.unwrap();
    let mut enrolled = found.clone();
    mark_enrolled(&mut enrolled, "rule:b".into());
    let wf = workflow("wf-e", "52:54:00:be:00:01");
    s.replace_discovered(&enrolled, Some(&wf)).await.unwrap();
    let stored = s.hardware(&found.id).await.unwrap().unwrap();
    assert_eq!(hardware_state(&stored), "enrolled");
    assert!(s.workflow("wf-e").await.unwrap().is_some());
    // A second enrolment (another server, or the operator at the same
    // moment) is refused and writes nothing.
    let again = workflow("wf-f", "52:54:00:be:00:01");
    assert!(matches!(
        s.replace_discovered(&enrolled, Some(&again)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(s.workflow("wf-f").await.unwrap().is_none());
}

on_both_backends!(
    a_timeline_batch_spanning_statements_keeps_order,
    inventories_in_a_group_keep_the_last_per_machine,
    rules_keep_their_order_and_counter_and_enrolment_happens_once,
    boot_timelines_keep_the_newest_steps_per_machine,
    workflows_are_counted_by_state,
    hardware_push_get_and_lookups,
    duplicate_mac_or_ip_is_a_conflict_and_changes_nothing,
    replace_and_delete_hardware,
    templates_crud_with_unique_names,
    workflow_transitions_are_logged_and_illegal_ones_change_nothing,
    a_batch_of_reports_applies_each_as_alone_and_refuses_alone,
    writes_publish_changes_after_commit,
    data_survives_reopen,
    concurrent_writers_queue_instead_of_failing,
    machine_logs_keep_the_newest_per_machine,
    unknown_senders_share_one_bucket_and_known_machines_keep_theirs,
    the_total_budget_drops_the_oldest_lines_first,
    bmc_records_keep_the_password_apart,
    action_logs_follow_and_inventory_round_trips,
    toggle_allow_netboot_turns_pxe_on_at_creation_and_off_at_success,
    unfinished_listing_follows_every_write,
);

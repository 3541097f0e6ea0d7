use std::collections::BTreeMap;
use std::time::Duration;

use super::write::StepRecord;
use super::*;

fn new_run(identity: &str, name: &str) -> NewRun {
    NewRun {
        identity: identity.into(),
        name: name.into(),
        experiment: Some("sweep".into()),
        kind: Kind::Train,
        mode: Some("nsr".into()),
        config: serde_json::json!({"mode": "nsr", "seed": 1}),
        total_steps: 10,
    }
}

fn values(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn log(store: &mut Store, run: i64, step: usize, reward: f64) {
    let v = values(&[("reward", reward), ("loss", -reward)]);
    store
        .log_step(
            run,
            &StepRecord {
                step,
                values: Some(&v),
                ..Default::default()
            },
        )
        .unwrap();
}

#[test]
fn migrations_apply_once_and_upgrade_an_old_file_keeping_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs/chartrl.db");
    {
        let mut old = Store::open_at(&path, 1).unwrap();
        assert_eq!(old.schema_version().unwrap(), 1);
        let (run, created) = old.find_or_create_run(&new_run("aa11", "r1")).unwrap();
        assert!(created);
        log(&mut old, run.id, 0, 0.5);
        assert!(old.conn.prepare("SELECT * FROM samples").is_err());
    }
    for _ in 0..2 {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), schema::CURRENT);
        let run = store.find_run("r1").unwrap();
        assert_eq!(store.metrics(run.id).unwrap().len(), 2);
        assert_eq!(store.samples(run.id, 0).unwrap(), vec![]);
        assert_eq!(store.eval_questions(run.id, 0, "e").unwrap(), vec![]);
        assert_eq!(store.integrity_check().unwrap(), "ok");
    }
    let mode: String = Store::open(&path)
        .unwrap()
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_file_from_a_newer_chartrl_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    drop(Store::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", schema::CURRENT + 1)
        .unwrap();
    drop(conn);
    let err = Store::open(&path).err().unwrap();
    assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
}

#[test]
fn identity_finds_the_existing_run_and_a_name_means_one_identity() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let (a, created) = store.find_or_create_run(&new_run("abcd01", "a")).unwrap();
    assert!(created && a.status == Status::Queued && a.experiment.as_deref() == Some("sweep"));
    let (again, created) = store.find_or_create_run(&new_run("abcd01", "a")).unwrap();
    assert!(!created);
    assert_eq!(again.id, a.id);
    let err = store
        .find_or_create_run(&new_run("ffff02", "a"))
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::NameTaken { .. }), "{err}");
    assert_eq!(store.find_run("abcd").unwrap().id, a.id);
    assert!(matches!(
        store.find_run("nope"),
        Err(StoreError::NoSuchRun(_))
    ));
}

#[test]
fn truncation_forgets_later_steps_and_rebuilds_the_latest_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let (run, _) = store.find_or_create_run(&new_run("01", "r")).unwrap();
    for step in 0..5 {
        log(&mut store, run.id, step, step as f64);
    }
    let event = EventRow {
        step: 4,
        level: "warning".into(),
        kind: "x".into(),
        message: "m".into(),
        time: 0.0,
    };
    store.add_event(run.id, &event).unwrap();
    assert_eq!(store.run_by_id(run.id).unwrap().step, 5);
    assert_eq!(store.list_runs().unwrap()[0].reward, Some(4.0));

    store.truncate_from(run.id, 3).unwrap();
    let rows = store.metrics(run.id).unwrap();
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r.step < 3));
    assert_eq!(store.list_runs().unwrap()[0].reward, Some(2.0));
    assert_eq!(store.run_by_id(run.id).unwrap().step, 3);
    assert!(store.events(run.id).unwrap().is_empty());
}

#[test]
fn non_finite_values_are_stored_as_null() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let (run, _) = store.find_or_create_run(&new_run("01", "r")).unwrap();
    log(&mut store, run.id, 0, f64::NAN);
    let rows = store.metrics(run.id).unwrap();
    assert!(rows.iter().all(|r| r.value.is_none()), "{rows:?}");
}

#[test]
fn a_live_claim_refuses_a_second_claimant_and_a_dead_one_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let (run, _) = store.find_or_create_run(&new_run("01", "r")).unwrap();
    let me = Owner::current();
    let run = store
        .claim(&run, &me, Duration::from_secs(60), false)
        .unwrap();
    assert_eq!(run.status, Status::Running);

    // Another claimant while this (live) process holds the run.
    let other = Owner {
        token: "other".into(),
        ..Owner::current()
    };
    let err = store
        .claim(&run, &other, Duration::from_secs(60), false)
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Busy { .. }), "{err}");

    // The holder's process is gone: a finished child's pid.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let dead = Owner {
        pid: dead_pid,
        pid_start: Some(1),
        token: "dead".into(),
        ..Owner::current()
    };
    store.claim(&run, &dead, Duration::ZERO, true).unwrap();
    let run = store
        .claim(&run, &other, Duration::from_secs(3600), false)
        .unwrap();
    assert_eq!(run.status, Status::Running);

    // The old holder no longer owns it: its heartbeats and step records are refused.
    assert!(!store.heartbeat(run.id, &dead.token).unwrap());
    let stale_write = StepRecord {
        step: 0,
        lease: Some(&dead.token),
        ..Default::default()
    };
    assert!(matches!(
        store.log_step(run.id, &stale_write),
        Err(StoreError::LeaseLost(_))
    ));
    assert!(matches!(
        store.release(&run, &dead, Status::Failed, None),
        Err(StoreError::LeaseLost(_))
    ));
    store
        .release(&run, &other, Status::Interrupted, None)
        .unwrap();
    assert_eq!(store.run_by_id(run.id).unwrap().status, Status::Interrupted);
}

#[test]
fn another_hosts_claim_is_stale_once_its_heartbeat_is_old() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let (run, _) = store.find_or_create_run(&new_run("01", "r")).unwrap();
    let remote = Owner {
        host: "elsewhere".into(),
        token: "remote".into(),
        ..Owner::current()
    };
    let run = store.claim(&run, &remote, Duration::ZERO, false).unwrap();
    let me = Owner::current();
    assert!(store
        .claim(&run, &me, Duration::from_secs(3600), false)
        .is_err());
    assert!(store.claim(&run, &me, Duration::ZERO, false).is_ok());
}

#[test]
fn evaluation_questions_round_trip_and_a_resume_truncates_them() {
    use crate::eval::QuestionResult;
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("chartrl.db")).unwrap();
    let (run, _) = store.find_or_create_run(&new_run("bb22", "r")).unwrap();
    let q = |index, correct| QuestionResult {
        index,
        prompt_id: format!("p{index}"),
        n: 4,
        correct,
        formatted: 3,
        truncated: 1,
        tokens: 40,
        question_type: if index == 0 { "trend" } else { "sum" }.to_string(),
        chance: Some(if index == 0 { 0.5 } else { 0.0 }),
    };
    store
        .add_eval_questions(run.id, 5, "e", &[q(1, 2), q(0, 4)])
        .unwrap();
    store
        .add_eval_questions(run.id, 5, "other", &[q(0, 0)])
        .unwrap();
    assert_eq!(
        store.eval_questions(run.id, 5, "e").unwrap(),
        vec![q(0, 4), q(1, 2)]
    );
    assert_eq!(store.evaluation(run.id, 5, "e").unwrap(), None);
    let m = serde_json::json!({"accuracy": 0.75});
    store.add_evaluation(run.id, 5, "e", &m).unwrap();
    assert_eq!(store.evaluation(run.id, 5, "e").unwrap(), Some(m));
    assert_eq!(store.evaluations(run.id).unwrap().len(), 1);
    store.truncate_from(run.id, 5).unwrap();
    assert_eq!(store.eval_questions(run.id, 5, "e").unwrap(), vec![]);
    assert_eq!(store.evaluations(run.id).unwrap(), vec![]);
}

#[test]
fn merging_copies_done_runs_replaces_unfinished_ones_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let task_db = dir.path().join("task-1.db");
    let mut task = Store::open(&task_db).unwrap();
    let (done, _) = task.find_or_create_run(&new_run("aa11", "r1")).unwrap();
    log(&mut task, done.id, 0, 0.5);
    log(&mut task, done.id, 1, 0.75);
    task.add_evaluation(done.id, 2, "e", &serde_json::json!({"accuracy": 0.5}))
        .unwrap();
    task.set_placement(done.id, "key-1", Some(&serde_json::json!({"job": "7"})))
        .unwrap();
    task.mark_done(done.id).unwrap();
    let (open, _) = task.find_or_create_run(&new_run("bb22", "r2")).unwrap();
    log(&mut task, open.id, 0, 0.1);

    let mut main = Store::open(&dir.path().join("chartrl.db")).unwrap();
    // The main store holds r1 unfinished: the done copy replaces it.
    let (stale, _) = main.find_or_create_run(&new_run("aa11", "r1")).unwrap();
    log(&mut main, stale.id, 0, 9.0);
    assert!(main.lacks_from(&task_db).unwrap());
    let o = main.merge_from(&task_db, &Pick::Done).unwrap();
    assert!(!main.lacks_from(&task_db).unwrap());
    assert_eq!((o.added, o.replaced, o.present), (0, 1, 0));
    assert_eq!(o.evaluations_added, 1);
    let r1 = main.find_run("r1").unwrap();
    assert_eq!(r1.status, Status::Done);
    assert_eq!(r1.experiment.as_deref(), Some("sweep"));
    let rewards: Vec<(usize, f64)> = main.series(r1.id, "reward").unwrap();
    assert_eq!(rewards, [(0, 0.5), (1, 0.75)]);
    assert_eq!(main.evaluations(r1.id).unwrap().len(), 1);
    let (key, sched) = main.placement(r1.id).unwrap();
    assert_eq!(key.as_deref(), Some("key-1"));
    assert_eq!(sched.unwrap()["job"], "7");
    assert!(main.run_by_plan_key("key-1").unwrap().is_some());
    // The unfinished r2 stays out.
    assert!(main.find_run("r2").is_err());

    let again = main.merge_from(&task_db, &Pick::Done).unwrap();
    assert_eq!(
        again,
        MergeOutcome {
            present: 1,
            ..MergeOutcome::default()
        }
    );
    assert_eq!(main.series(r1.id, "reward").unwrap().len(), 2);
    // Picking by key finds nothing for a key no run has.
    let none = main
        .merge_from(&task_db, &Pick::Keys(vec!["nope".into()]))
        .unwrap();
    assert_eq!(none, MergeOutcome::default());
}

#[test]
fn merging_refuses_a_name_another_run_holds() {
    let dir = tempfile::tempdir().unwrap();
    let task_db = dir.path().join("task-1.db");
    let mut task = Store::open(&task_db).unwrap();
    let (done, _) = task.find_or_create_run(&new_run("aa11", "r1")).unwrap();
    task.mark_done(done.id).unwrap();
    let mut main = Store::open(&dir.path().join("chartrl.db")).unwrap();
    main.find_or_create_run(&new_run("cc33", "r1")).unwrap();
    let err = main.merge_from(&task_db, &Pick::Done).unwrap_err();
    assert!(matches!(err, StoreError::NameTaken { .. }), "{err}");
    // Nothing was half-merged, and the file can be merged again once the clash is gone.
    assert_eq!(main.list_runs().unwrap().len(), 1);
}

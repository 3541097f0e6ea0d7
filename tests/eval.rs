//! `chartrl eval` through the real binary on a tiny model: pass@1 is the mean accuracy, results
//! are stored and read back rather than re-sampled, an interrupted evaluation resumes with the
//! same numbers, and a k above n is refused.

mod common;

use common::{ok, user_error};

fn eval_json(args: &[&str], dir: &std::path::Path) -> serde_json::Value {
    let out = ok(args, dir);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn eval_stores_pass_at_k_and_resumes_the_missing_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    common::tiny_model(tmp.path(), "m");
    // 20 questions: one full chunk of 16 and a partial one.
    let args = [
        "eval",
        "--model",
        "m",
        "--questions",
        "20",
        "-n",
        "4",
        "--k",
        "1,2,4",
        "--max-new-tokens",
        "12",
        "--temperature",
        "1.0",
        "--json",
    ];
    let first = eval_json(&args, tmp.path());
    assert_eq!(first["sampled"], 20);
    let r = &first["result"];
    assert_eq!(r["questions"], 20);
    assert_eq!(r["n"], 4);
    let pass: Vec<f64> = r["pass_at_k"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(pass.len(), 4, "every k <= n is stored");
    assert!(
        (pass[0] - r["accuracy"].as_f64().unwrap()).abs() < 1e-12,
        "pass@1 = accuracy"
    );
    assert!(pass.windows(2).all(|w| w[0] <= w[1] + 1e-12), "{pass:?}");
    assert_eq!(first["pass_at"]["pass@2"], r["pass_at_k"][1]);
    let run = first["run"].as_str().unwrap().to_string();
    assert!(run.starts_with("eval-m-"), "{run}");

    // Asked again: read back, nothing sampled.
    let again = eval_json(&args, tmp.path());
    assert_eq!(again["sampled"], 0);
    assert_eq!(again["result"], first["result"]);

    // Lose the aggregate and the second chunk, as if killed mid-way: only that chunk is
    // sampled again, and the result is the same.
    let db = rusqlite::Connection::open(tmp.path().join("runs/chartrl.db")).unwrap();
    db.execute("DELETE FROM evaluations", []).unwrap();
    let gone = db
        .execute("DELETE FROM eval_questions WHERE idx >= 16", [])
        .unwrap();
    assert_eq!(gone, 4);
    drop(db);
    let resumed = eval_json(&args, tmp.path());
    assert_eq!(resumed["sampled"], 4);
    assert_eq!(resumed["result"], first["result"]);

    // The run holds it; runs show describes it.
    let show = ok(&["runs", "show", &run], tmp.path());
    assert!(
        show.contains("pass@4") && show.contains("20 questions of synthetic test split"),
        "{show}"
    );

    let err = user_error(
        &["eval", "--model", "m", "-n", "4", "--k", "1,8"],
        tmp.path(),
    );
    assert!(
        err.contains("pass@8 needs at least 8 samples per question, but n = 4"),
        "{err}"
    );
    let err = user_error(
        &["eval", "--model", "m", "-n", "4", "--temperature", "0"],
        tmp.path(),
    );
    assert!(err.contains("n = 1"), "{err}");
    let err = user_error(&["eval", "--run", "nope"], tmp.path());
    assert!(err.contains("nope"), "{err}");
}

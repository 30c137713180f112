//! The `loyalscore` CLI as a person or a script uses it: real binary, real registries.

use std::process::{Command, Output};

use loyalscore::registry::Registry;
use object_store::ObjectStoreExt;

use crate::moto::{Moto, BUCKET};
use crate::support::{publish, sample, text};

pub fn cli(registry: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loyalscore"))
        .arg("--registry")
        .arg(registry)
        .args(args)
        .env("USER", "tester")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

#[test]
fn promote_compare_and_roll_back_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = Registry::open(path).unwrap();
    rt.block_on(async {
        publish(&reg, "v20260101-000000-aaaaaa").await;
        publish(&reg, "v20260102-000000-bbbbbb").await;
    });
    let (a, b) = ("v20260101-000000-aaaaaa", "v20260102-000000-bbbbbb");

    let list = ok(&cli(path, &["models", "list"]));
    let first = list.lines().nth(1).unwrap();
    assert!(first.starts_with(b), "newest first:\n{list}");
    assert!(list.lines().next().unwrap().contains("CHURN AUC"));
    assert!(ok(&cli(path, &["models", "show", a])).contains("sha256"));
    let diff = ok(&cli(path, &["models", "diff", a, b]));
    assert!(
        diff.contains("churn ROC-AUC") && diff.contains("CLV min_samples_leaf"),
        "{diff}"
    );

    let out = ok(&cli(
        path,
        &[
            "alias",
            "set",
            "production",
            a,
            "--expect",
            "none",
            "--reason",
            "first model",
        ],
    ));
    assert!(out.contains(&format!("production: none -> {a}")), "{out}");
    ok(&cli(
        path,
        &[
            "alias",
            "set",
            "production",
            b,
            "--expect",
            a,
            "--reason",
            "better AUC",
        ],
    ));

    // A stale --expect loses, exits 3 and names where the alias really is.
    let stale = cli(
        path,
        &[
            "alias",
            "set",
            "production",
            a,
            "--expect",
            a,
            "--reason",
            "late",
        ],
    );
    assert_eq!(stale.status.code(), Some(3));
    assert!(
        text(&stale.stderr).contains(&format!("points at {b}")),
        "{}",
        text(&stale.stderr)
    );

    let missing_reason = cli(path, &["alias", "set", "staging", a]);
    assert!(!missing_reason.status.success());
    assert!(
        text(&missing_reason.stderr).contains("reason is required"),
        "{}",
        text(&missing_reason.stderr)
    );

    let out = ok(&cli(
        path,
        &[
            "alias",
            "rollback",
            "production",
            "--reason",
            "revenue dipped",
        ],
    ));
    assert!(out.contains(&format!("production: {b} -> {a}")), "{out}");
    let hist: serde_json::Value = serde_json::from_str(&ok(&cli(
        path,
        &["alias", "history", "production", "--json"],
    )))
    .unwrap();
    let hist = hist.as_array().unwrap();
    assert_eq!(hist.len(), 3);
    assert_eq!(hist[2]["action"], "rollback");
    assert_eq!(hist[2]["actor"], "tester");
    assert_eq!(hist[2]["reason"], "revenue dipped");
    let list: serde_json::Value =
        serde_json::from_str(&ok(&cli(path, &["models", "list", "--json"]))).unwrap();
    assert_eq!(list[1]["aliases"][0], "production");

    let unknown = cli(path, &["models", "show", "v404"]);
    assert!(!unknown.status.success());
    assert!(text(&unknown.stderr).contains("version v404 does not exist"));
    let unknown = cli(path, &["alias", "history", "nope"]);
    assert!(text(&unknown.stderr).contains("alias nope does not exist"));
}

/// Training and promotion against S3 by URL, configured by the usual AWS variables.
/// An experiment from the command line: set, show, a refused change, stop, history.
#[test]
fn traffic_set_show_stop_and_history_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = Registry::open(path).unwrap();
    rt.block_on(async {
        publish(&reg, "v001").await;
        publish(&reg, "v002").await;
    });
    let set = |extra: &[&str]| {
        let mut args = vec![
            "traffic",
            "set",
            "--experiment",
            "churn-v2",
            "--arm",
            "control=v001:90",
            "--reason",
            "try v002",
        ];
        args.extend_from_slice(extra);
        cli(path, &args)
    };
    let out = ok(&set(&["--arm", "challenger=v002:10", "--holdout", "0.1"]));
    assert!(out.contains("traffic record 1 (set by tester"), "{out}");
    let show = ok(&cli(path, &["traffic", "show"]));
    assert!(show.contains("experiment churn-v2"), "{show}");
    assert!(
        show.lines()
            .any(|l| l.starts_with("control") && l.contains("v001") && l.contains("81.0%")),
        "{show}"
    );
    assert!(
        show.lines()
            .any(|l| l.starts_with("holdout") && l.contains("10.0%")),
        "{show}"
    );

    // Refusals name the problem and change nothing.
    let bad = set(&["--arm", "challenger=v002"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("no ':WEIGHT'"),
        "{}",
        text(&bad.stderr)
    );
    let missing = set(&["--arm", "challenger=v404:10"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("v404"),
        "{}",
        text(&missing.stderr)
    );
    let stale = cli(
        path,
        &["traffic", "stop", "--expect-seq", "0", "--reason", "r"],
    );
    assert_eq!(stale.status.code(), Some(3), "{}", text(&stale.stderr));
    assert!(
        text(&stale.stderr).contains("at record 1"),
        "{}",
        text(&stale.stderr)
    );

    let stop = ok(&cli(
        path,
        &["traffic", "stop", "--expect-seq", "1", "--reason", "done"],
    ));
    assert!(stop.contains("all traffic follows the alias"), "{stop}");
    let again = cli(path, &["traffic", "stop", "--reason", "again"]);
    assert!(
        text(&again.stderr).contains("no experiment running"),
        "{}",
        text(&again.stderr)
    );
    let history = ok(&cli(path, &["traffic", "history"]));
    let rows: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{history}");
    assert!(rows[0].contains("set") && rows[0].contains("control=v001:90 challenger=v002:10"));
    assert!(rows[1].contains("stop") && rows[1].contains("done"));
}

#[test]
fn train_and_promote_on_s3_by_url() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = sample(dir.path(), 600, 500, 8);
    let url = format!("s3://{BUCKET}/prod/models");
    // The transactions come from the object store too.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let csv_key = object_store::path::Path::from("exports/sample.csv");
    rt.block_on(
        moto.store()
            .put(&csv_key, std::fs::read(&csv).unwrap().into()),
    )
    .unwrap();
    let csv_url = format!("s3://{BUCKET}/exports/sample.csv");
    let env = [
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ];
    let mut train = Command::new(env!("CARGO_BIN_EXE_loyalscore-train"));
    train.args([
        "fit",
        "--transactions",
        &csv_url,
        "--registry",
        &url,
        "--trees",
        "5",
        "--churn-max-depth",
        "6",
        "--churn-min-samples-leaf",
        "20",
        "--clv-max-depth",
        "6",
        "--clv-min-samples-leaf",
        "20",
        "--force",
    ]);
    let admin = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_loyalscore"));
        c.args(["--registry", &url]).args(args);
        for (k, v) in &env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    for (k, v) in &env {
        train.env(k, v);
    }
    let out = train.output().unwrap();
    let stdout = ok(&out);
    let version = stdout
        .lines()
        .find_map(|l| l.strip_prefix("published version "))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(
        stdout.contains(&format!("Data quality: {csv_url}")),
        "{stdout}"
    );
    let list = ok(&admin(&["models", "list"]));
    assert!(list.contains(&version), "{list}");
    ok(&admin(&[
        "alias",
        "set",
        "production",
        &version,
        "--reason",
        "s3",
    ]));
    assert!(ok(&admin(&["alias", "list"])).contains(&version));
}

/// The quickstart's pieces (without the blocking server), then the printed example sent to a
/// real server with the `score` client, then the same log scored offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quickstart_score_client_and_offline_scoring() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data/sample.csv");
    let reg = dir.path().join("models");
    let state = dir.path().join("state/customers.redb");
    let bin = env!("CARGO_BIN_EXE_loyalscore");
    let out = tokio::process::Command::new(bin)
        .args([
            "quickstart",
            "--no-serve",
            "--customers",
            "1500",
            "--data",
            data.to_str().unwrap(),
            "--registry",
            reg.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ])
        .output()
        .await
        .unwrap();
    let stdout = ok(&out);
    assert!(stdout.contains("production -> v"), "{stdout}");
    assert!(stdout.contains("live state: "), "{stdout}");
    let example = dir.path().join("data/example-request.json");
    assert!(example.exists());
    let versions = |reg: &std::path::Path| std::fs::read_dir(reg.join("versions")).unwrap().count();
    assert_eq!(versions(&reg), 1);

    // Run again on the same data: the version is reused, not trained and published twice.
    let again = tokio::process::Command::new(bin)
        .args([
            "quickstart",
            "--no-serve",
            "--data",
            data.to_str().unwrap(),
            "--registry",
            reg.to_str().unwrap(),
            "--state",
            "off",
        ])
        .output()
        .await
        .unwrap();
    let again = ok(&again);
    assert!(
        again.contains("reusing v") && again.contains("(already)"),
        "{again}"
    );
    assert_eq!(versions(&reg), 1);

    let stored = state.to_str().unwrap().to_string();
    let server = crate::server::TestServer::start(reg.to_str().unwrap(), move |c| {
        c.state.state = stored;
    })
    .await;
    for _ in 0..100 {
        if server.health("").await
            == tonic_health::pb::health_check_response::ServingStatus::Serving
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let addr = format!("http://{}", server.addr);
    let out = tokio::process::Command::new(bin)
        .args([
            "--json",
            "score",
            "--server",
            &addr,
            "--file",
            example.to_str().unwrap(),
            "--explain",
        ])
        .output()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let p = v["churn_probability"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p), "{v}");
    assert_eq!(v["reasons"].as_array().unwrap().len(), 3, "{v}");
    assert!(v["model_version"].as_str().unwrap().starts_with('v'));

    // The same customer by id alone, from the state the quickstart loaded: the same answer
    // as their history sent in the request.
    let req: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&example).unwrap()).unwrap();
    let out = tokio::process::Command::new(bin)
        .args([
            "--json",
            "score",
            "--server",
            &addr,
            "--customer-id",
            req["customer_id"].as_str().unwrap(),
            "--as-of",
            req["as_of"].as_str().unwrap(),
        ])
        .output()
        .await
        .unwrap();
    let by_id: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    for field in [
        "churn_probability",
        "clv",
        "segment",
        "days_overdue",
        "contact_by",
    ] {
        assert_eq!(by_id[field], v[field], "{field}: {by_id} vs {v}");
    }

    // Flags form, with a wrong feature: a clear error from the server, non-zero exit.
    let out = tokio::process::Command::new(bin)
        .args([
            "score",
            "--server",
            &addr,
            "--customer-id",
            "x",
            "--feature",
            "shoe_size=3",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("InvalidArgument")
            && text(&out.stderr).contains("unknown feature"),
        "{}",
        text(&out.stderr)
    );

    // The whole log through the server, as of a date.
    let online = dir.path().join("online.csv");
    let out = tokio::process::Command::new(bin)
        .args([
            "score-log",
            "--server",
            &addr,
            "--transactions",
            data.to_str().unwrap(),
            "--as-of",
            "2025-06-30",
            "--batch",
            "400",
            "--out",
            online.to_str().unwrap(),
        ])
        .output()
        .await
        .unwrap();
    let online_msg = ok(&out);
    server.stop().await;

    // Offline batch scoring of the same log with the production version.
    let scores = dir.path().join("scores.csv");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loyalscore-train"))
        .args([
            "score",
            "--transactions",
            data.to_str().unwrap(),
            "--as-of",
            "2025-06-30",
            "--registry",
            reg.to_str().unwrap(),
            "--out",
            scores.to_str().unwrap(),
        ])
        .output()
        .await
        .unwrap();
    let msg = ok(&out);
    let csv = std::fs::read_to_string(&scores).unwrap();
    let mut lines = csv.lines();
    let timing = "typical_gap_days,expected_next_purchase,days_overdue,overdue_percentile,contact_from,contact_by";
    assert_eq!(
        lines.next(),
        Some(
            format!("customer_id,churn_probability,clv,segment,version,{timing},out_of_range")
                .as_str()
        )
    );
    let rows: Vec<&str> = lines.collect();
    assert!(rows.len() > 1000, "{msg}");
    assert!(
        msg.contains(&format!("scored {} customers", rows.len())),
        "{msg}"
    );
    let version = v["model_version"].as_str().unwrap();
    assert!(rows.iter().all(|r| r.split(',').nth(4) == Some(version)));

    // The server, fed the raw histories, gives every customer the offline score, segment
    // and timing exactly.
    let online_csv = std::fs::read_to_string(&online).unwrap();
    let mut online_lines = online_csv.lines();
    assert_eq!(
        online_lines.next(),
        Some(
            format!("customer_id,churn_probability,clv,segment,version,{timing},out_of_range,experiment,arm")
                .as_str()
        )
    );
    let parse = |r: &str| {
        let c: Vec<&str> = r.split(',').collect();
        let num = |s: &str| s.parse::<f64>().unwrap();
        // The timing columns and out_of_range.
        let t: Vec<String> = c[5..12].iter().map(|s| s.to_string()).collect();
        (
            c[0].to_string(),
            (num(c[1]), num(c[2]), c[3].to_string(), t),
        )
    };
    let online: std::collections::HashMap<_, _> = online_lines.map(parse).collect();
    assert_eq!(online.len(), rows.len(), "{online_msg}");
    for r in &rows {
        let (id, offline) = parse(r);
        assert_eq!(offline.3.len(), 7);
        assert_eq!(online.get(&id), Some(&offline), "customer {id}");
    }
}

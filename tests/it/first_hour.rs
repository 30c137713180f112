//! A new user's first hour, with the real binaries: real exports read as written, and no
//! silent failure (a server that serves nothing says why, a missing registry is an error).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use loyalscore::registry::Registry;

use crate::support::{free_port, publish, sample, text, train_cli};

/// Starts `loyalscore-serve` on `registry` and `alias` and returns the first warning it
/// logs (within 30 s), with the server killed.
fn first_warning(registry: &str, alias: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loyalscore-serve"))
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--registry",
            registry,
            "--alias",
            alias,
            "--metrics-listen",
            "off",
            "--state",
            "off",
            "--log",
            "warn",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    line.expect("the server logs a warning when it has nothing to serve")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_nothing_to_serve_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-registry");
    let line = first_warning(missing.to_str().unwrap(), "production");
    assert!(
        line.contains("nothing to serve")
            && line.contains("does not exist")
            && line.contains("alias=production"),
        "{line}"
    );
    // Logs that are not a terminal carry no colour codes.
    assert!(!line.contains('\u{1b}'), "{line:?}");
    assert!(!missing.exists(), "a read does not create the folder");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let line = first_warning(empty.to_str().unwrap(), "production");
    assert!(line.contains("holds no versions"), "{line}");

    let reg_dir = dir.path().join("models");
    let reg = Registry::open(reg_dir.to_str().unwrap()).unwrap();
    publish(&reg, "v001").await;
    crate::support::promote(&reg, "v001", loyalscore::registry::Expect::Absent).await;
    let line = first_warning(reg_dir.to_str().unwrap(), "prodution");
    assert!(
        line.contains("no such alias; the aliases that exist are production")
            && line.contains("alias=prodution"),
        "{line}"
    );
}

#[test]
fn a_registry_that_does_not_exist_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/path");
    let out = Command::new(env!("CARGO_BIN_EXE_loyalscore"))
        .args(["--registry", missing.to_str().unwrap(), "models", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );
    assert!(!missing.exists());
}

/// The sample as a German programme exports it: semicolons, decimal commas, local
/// `YYYY-MM-DD HH:MM:SS` times, a byte-order mark.
fn german(csv: &str) -> String {
    let mut out = String::from("\u{feff}customer_id;timestamp;amount\n");
    for line in csv.lines().skip(1) {
        let c: Vec<&str> = line.split(',').collect();
        let ts = c[1].trim_end_matches('Z').replace('T', " ");
        out.push_str(&format!("{};{ts};{}\n", c[0], c[2].replace('.', ",")));
    }
    out
}

#[test]
fn real_exports_are_read_and_fit_speaks_json() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = sample(dir.path(), 400, 700, 3);
    let de = dir.path().join("export.csv");
    std::fs::write(&de, german(&std::fs::read_to_string(&csv).unwrap())).unwrap();
    let reg = dir.path().join("models");
    let out = train_cli(&[
        "fit",
        "--transactions",
        de.to_str().unwrap(),
        "--registry",
        reg.to_str().unwrap(),
        "--timezone",
        "Europe/Berlin",
        "--trees",
        "10",
        "--force",
        "--json",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("semicolon delimiter (detected), decimal comma (detected), zone-less times in Europe/Berlin")
            && stderr.contains("rows rejected               0"),
        "{stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["published"], true);
    let version = v["version"].as_str().unwrap();
    assert!(v["metrics"]["churn"]["roc_auc"].as_f64().is_some(), "{v}");

    // `models show` lists the features, with the ranges scores are judged against.
    let out = Command::new(env!("CARGO_BIN_EXE_loyalscore"))
        .args([
            "--registry",
            reg.to_str().unwrap(),
            "models",
            "show",
            version,
        ])
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    assert!(
        shown.contains("recency_days") && shown.contains("recency_log_z") && shown.contains("MAX"),
        "{shown}"
    );

    // An empty file, and the limit message naming its flag.
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let out = train_cli(&[
        "fit",
        "--transactions",
        empty.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(
        text(&out.stderr).contains("the file is empty"),
        "{}",
        text(&out.stderr)
    );
    let out = train_cli(&[
        "fit",
        "--transactions",
        de.to_str().unwrap(),
        "--decimal-comma",
        "--delimiter",
        "comma",
        "--dry-run",
    ]);
    assert!(
        text(&out.stderr).contains("--delimiter semicolon"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn generate_does_not_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("sample.csv");
    let gen = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--customers",
            "20",
            "--days",
            "60",
            "--out",
            out_path.to_str().unwrap(),
        ];
        args.extend(extra);
        train_cli(&args)
    };
    assert!(gen(&[]).status.success());
    let before = std::fs::read(&out_path).unwrap();
    let again = gen(&["--seed", "9"]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        std::fs::read(&out_path).unwrap(),
        before,
        "nothing was touched"
    );
    assert!(gen(&["--seed", "9", "--force"]).status.success());
    assert_ne!(std::fs::read(&out_path).unwrap(), before);
}

/// A history whose last purchase lies `days_ago` days before `as_of`.
fn lapsed(as_of: i64, days_ago: i64) -> loyalscore::proto::v1::ScoreRequest {
    use loyalscore::proto::v1 as pb;
    let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    let last = as_of - days_ago * 86_400;
    // Points as the sample's purchases earn them: every fitted customer had some.
    let tx = |seconds, amount: f64| pb::Transaction {
        time: at(seconds),
        amount,
        points_earned: amount.floor(),
        channel: "web".into(),
        ..Default::default()
    };
    pb::ScoreRequest {
        customer_id: "lapsed".into(),
        input: Some(pb::score_request::Input::History(pb::History {
            transactions: vec![tx(last - 30 * 86_400, 30.0), tx(last, 25.0)],
        })),
        as_of: at(as_of),
        ..Default::default()
    }
}

/// Away longer than anyone the version was fitted on: the answer says so, and the churn
/// probability does not fall with a longer absence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_longest_silence_scores_hold_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    crate::server::production_v001(&path).await;
    let server = crate::server::TestServer::start(&path, |_| {}).await;
    crate::server::until_serving(&server).await;
    let mut client = server.scoring().await;
    let as_of = loyalscore::time::parse_timestamp("2026-06-01").unwrap();
    let mut answers = Vec::new();
    for days in [200, 366, 500, 730, 1500] {
        let r = client
            .score(lapsed(as_of, days))
            .await
            .unwrap()
            .into_inner();
        answers.push((days, r.churn_probability, r.out_of_range, r.days_overdue));
    }
    server.stop().await;
    let (_, near, near_flags, _) = &answers[0];
    assert!(near_flags.is_empty(), "{near_flags:?}");
    let beyond: Vec<f64> = answers[1..].iter().map(|a| a.1).collect();
    assert!(
        beyond.windows(2).all(|w| w[1] >= w[0]),
        "churn beyond the lookback never falls: {beyond:?} (200 days: {near})"
    );
    for (days, _, flags, overdue) in &answers[1..] {
        assert!(
            flags.iter().any(|f| f == "recency_days"),
            "{days}: {flags:?}"
        );
        assert!(
            *overdue > (*days as f64) - 100.0,
            "{days}: timing reads the real as_of"
        );
    }
}

/// What a container or a log file sees: one plain line per event, no `Some(..)`, each cause
/// said once, and an actor even without `$USER`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_messages_read_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("models");
    crate::server::production_v001(path.to_str().unwrap()).await;
    let out = Command::new(env!("CARGO_BIN_EXE_loyalscore-serve"))
        .args([
            "--registry",
            path.to_str().unwrap(),
            "--exposure-log",
            dir.path().join("exp").to_str().unwrap(),
            "--exposure-key",
            "short",
        ])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(
        stderr.matches("use at least 16 random bytes").count(),
        1,
        "{stderr}"
    );

    let publish_v2 = Registry::open(path.to_str().unwrap()).unwrap();
    publish(&publish_v2, "v002").await;
    let out = Command::new(env!("CARGO_BIN_EXE_loyalscore"))
        .args([
            "--registry",
            path.to_str().unwrap(),
            "alias",
            "set",
            "production",
            "v002",
            "--reason",
            "container",
        ])
        .env_remove("USER")
        .env_remove("LOGNAME")
        .env("HOSTNAME", "pod-7")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let h = publish_v2.alias_history("production").await.unwrap();
    assert_eq!(h.last().unwrap().actor, "host:pod-7");
}

/// `quickstart --data` on a programme's own export: trained, promoted, and an example
/// request of one of its own customers.
#[test]
fn quickstart_runs_on_your_own_data() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = sample(dir.path(), 600, 700, 4);
    let mine = dir.path().join("myshop.csv");
    let renamed = std::fs::read_to_string(&csv)
        .unwrap()
        .replace("\nC", "\nSHOP-C");
    std::fs::write(&mine, renamed).unwrap();
    let reg = dir.path().join("models");
    let out = Command::new(env!("CARGO_BIN_EXE_loyalscore"))
        .args([
            "--registry",
            reg.to_str().unwrap(),
            "quickstart",
            "--no-serve",
            "--data",
            mine.to_str().unwrap(),
            "--state",
            "off",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let example: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("example-request.json")).unwrap(),
    )
    .unwrap();
    let id = example["customer_id"].as_str().unwrap();
    assert!(id.starts_with("SHOP-"), "{example}");
    assert!(example["history"].as_array().unwrap().len() > 1);
}

/// `score-log` names the customers it could not score (the user's own terminal), not their
/// position in a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_log_names_the_customers_that_failed() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = sample(dir.path(), 200, 400, 6);
    let reg = dir.path().join("models");
    crate::server::production_v001(reg.to_str().unwrap()).await;
    // Histories longer than 3 purchases are refused by this server.
    let server =
        crate::server::TestServer::start(reg.to_str().unwrap(), |c| c.max_history = 3).await;
    crate::server::until_serving(&server).await;
    let out_csv = dir.path().join("scores.csv");
    let addr = format!("http://{}", server.addr);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loyalscore"))
        .args([
            "score-log",
            "--server",
            &addr,
            "--transactions",
            csv.to_str().unwrap(),
            "--as-of",
            "2024-01-31",
            "--out",
            out_csv.to_str().unwrap(),
        ])
        .output()
        .await
        .unwrap();
    server.stop().await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("customer \"C0") && stderr.contains("more than the limit of 3"),
        "{stderr}"
    );
    assert!(!stderr.contains("item "), "{stderr}");
}

//! The Grafana dashboard and the Prometheus alert rules against a real server: every metric
//! they query is one the server exports (after traffic that touches every part), every
//! dashboard query parses as PromQL, and the rules pass `promtool check rules` and their
//! unit tests (`promtool` from Debian's prometheus package, installed by scripts/test.sh).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use loyalscore::proto::v1 as pb;
use loyalscore::proto::v1::customer_state_client::CustomerStateClient;
use loyalscore::registry::{Experiment, Move};
use loyalscore::routing::Arm;

use crate::server::{features_request, production_v001, typical, until_serving, TestServer};
use crate::support::{publish, publish_other, text};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DASHBOARD: &str = "deploy/grafana/loyalscore.json";
const RULES: &str = "helm/loyalscore/files/loyalscore-rules.yaml";
const RULE_TESTS: &str = "deploy/prometheus/loyalscore-rules.test.yaml";

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap()
}

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool: {e}: run ./scripts/test.sh, which installs it (Debian's prometheus)")
        })
}

/// Every PromQL expression of the dashboard: panel targets and template variable queries.
fn dashboard_exprs(dash: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => walk(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dash, &mut out);
    out
}

/// The `loyalscore_*` names a text mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("loyalscore_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The metric names in a Prometheus text exposition (histograms as _bucket, _sum, _count).
fn exported(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// A server with everything on that the dashboard shows: an experiment with a shadow
/// version, an exposure log, a pinned version, a batch, and the customer state.
async fn server_after_traffic(dir: &Path) -> TestServer {
    let path = dir.join("registry").to_str().unwrap().to_string();
    let reg = production_v001(&path).await;
    publish(&reg, "v002").await;
    publish_other(&reg, "v003").await;
    let arm = |name: &str, version: &str| Arm {
        name: name.into(),
        version: version.into(),
        weight: 50,
    };
    let experiment = Experiment {
        name: "dash".into(),
        salt: "dash".into(),
        arms: vec![arm("control", "v001"), arm("challenger", "v002")],
        shadow: vec!["v003".into()],
        holdout: 0.0,
    };
    let who = Move {
        actor: "t".into(),
        reason: "test".into(),
    };
    reg.set_traffic("production", experiment, Some(0), &who)
        .await
        .unwrap();
    let exposures = dir.join("exposures").to_str().unwrap().to_string();
    let state = dir
        .join("state/customers.redb")
        .to_str()
        .unwrap()
        .to_string();
    let server = TestServer::start(&path, move |c| {
        c.exposure_log = Some(exposures);
        c.exposure_key = Some("test-exposure-key-0123456789".into());
        c.state.state = state;
    })
    .await;
    until_serving(&server).await;
    traffic(&server).await;
    server
}

async fn traffic(server: &TestServer) {
    let mut scoring = server.scoring().await;
    for i in 0..40 {
        let mut r = features_request(&format!("C{i:07}"), typical());
        if i == 0 {
            r.version = "v002".into();
        }
        scoring.score(r).await.unwrap();
    }
    let items = (0..20)
        .map(|i| features_request(&format!("B{i:07}"), typical()))
        .collect();
    scoring
        .batch_score(pb::BatchScoreRequest {
            items,
            ..Default::default()
        })
        .await
        .unwrap();
    // An error, so a code other than OK is counted too.
    let bad = scoring.score(features_request("C1", vec![1.0])).await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
    let mut state = CustomerStateClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let tx = |day: i64| pb::Transaction {
        time: Some(prost_types::Timestamp {
            seconds: 1_735_689_600 + day * 86_400,
            nanos: 0,
        }),
        amount: 25.0,
        ..Default::default()
    };
    let events = (0..3)
        .map(|d| pb::PurchaseEvent {
            customer_id: "S0000001".into(),
            event_id: format!("e{d}"),
            transaction: Some(tx(d * 30)),
        })
        .collect();
    state
        .record_purchases(pb::RecordPurchasesRequest { events })
        .await
        .unwrap();
    scoring
        .score(pb::ScoreRequest {
            customer_id: "S0000001".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_and_the_alerts_query_only_metrics_the_server_exports() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_after_traffic(dir.path()).await;
    let have = exported(&server.metrics().await);
    server.stop().await;

    let dash: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let exprs = dashboard_exprs(&dash);
    assert!(exprs.len() >= 20, "{exprs:?}");
    let mut queried = BTreeSet::new();
    for e in &exprs {
        let names = metric_names(e);
        assert!(
            !names.is_empty(),
            "a dashboard query without a loyalscore metric: {e}"
        );
        queried.extend(names);
    }
    let in_rules = metric_names(&read(RULES));
    assert!(in_rules.len() >= 8, "{in_rules:?}");
    for (what, names) in [("dashboard", &queried), ("alert rules", &in_rules)] {
        let missing: Vec<_> = names.difference(&have).collect();
        assert!(
            missing.is_empty(),
            "the {what} query metrics the server does not export: {missing:?}\nexported: {have:?}"
        );
    }
    // The dashboard covers every family the server exports (a new metric needs a panel).
    let family = |n: &str| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| n.strip_suffix(s))
            .unwrap_or(n)
            .to_string()
    };
    let shown: BTreeSet<String> = queried.iter().map(|n| family(n)).collect();
    let unshown: Vec<String> = have
        .iter()
        .map(|n| family(n))
        .filter(|f| f.starts_with("loyalscore_") && !shown.contains(f))
        .collect();
    assert!(unshown.is_empty(), "exported but on no panel: {unshown:?}");
}

/// The dashboard's "server-side error" codes and the error-ratio alert's are one list.
#[test]
fn the_dashboard_and_the_alert_agree_on_server_side_errors() {
    let codes = |text: &str| -> BTreeSet<String> {
        text.match_indices("code=~\\\"")
            .map(|(i, m)| &text[i + m.len()..])
            .chain(
                text.match_indices("code=~\"")
                    .map(|(i, m)| &text[i + m.len()..]),
            )
            .filter_map(|t| t.split(['\\', '"']).next())
            .map(str::to_string)
            .collect()
    };
    let (dash, rules) = (codes(&read(DASHBOARD)), codes(&read(RULES)));
    assert_eq!(dash.len(), 1, "{dash:?}");
    assert_eq!(dash, rules);
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let check = promtool(&["check", "rules", RULES]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(text(&check.stdout).contains("SUCCESS: 9 rules found"));
    let unit = promtool(&["test", "rules", RULE_TESTS]);
    assert!(
        unit.status.success(),
        "{}{}",
        text(&unit.stdout),
        text(&unit.stderr)
    );
}

/// Every dashboard query is valid PromQL: promtool parses each as a recording rule, with
/// Grafana's variables replaced by what Grafana substitutes.
#[test]
fn every_dashboard_query_parses_as_promql() {
    let dash: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let exprs: Vec<String> = dashboard_exprs(&dash)
        .into_iter()
        .filter(|e| !e.starts_with("label_values("))
        .map(|e| {
            e.replace("$__rate_interval", "1m")
                .replace("$namespace", ".*")
                .replace("$pod", ".*")
        })
        .collect();
    assert!(exprs.len() >= 20);
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules += &format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&file, rules).unwrap();
    let out = promtool(&["check", "rules", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

//! Drift at serve time, against a real server: features shifted from the version's training
//! profile move that feature's PSI gauge past 0.25 while the others stay below 0.1, and
//! `loyalscore drift` reads the same.

use loyalscore::features::{DAY, FEATURE_NAMES};
use loyalscore::proto::v1 as pb;
use loyalscore::registry::{Expect, Registry};
use loyalscore::time::parse_timestamp;
use loyalscore::trainer::dataset::{build_rows, everyone, keep_all};
use loyalscore::trainer::{load_transactions, LoadOptions, Silent};

use crate::server::{features_request, until_serving, TestServer};
use crate::support::{promote, publish_model, sample, text, train_on};

/// `loyalscore_feature_psi{feature="NAME"}` (or score) from an exposition.
fn gauge(exposition: &str, metric: &str, label: &str, name: &str) -> Option<f64> {
    let prefix = format!("{metric}{{{label}=\"{name}\"}} ");
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shifted_feature_drifts_past_its_profile_and_the_others_stay() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = sample(dir.path(), 1_500, 700, 21);
    let bytes = std::fs::read(&csv).unwrap();
    let model = train_on(&bytes, 10, 8, 3);
    let path = dir.path().join("registry").to_str().unwrap().to_string();
    let reg = Registry::open(&path).unwrap();
    publish_model(&reg, "v001", &model).await;
    promote(&reg, "v001", Expect::Absent).await;

    // The rows the profile was counted on: every customer at every validation snapshot.
    let log = load_transactions(&bytes[..], "sample", &LoadOptions::default(), |_| {}).unwrap();
    let at: Vec<i64> = model
        .0
        .split
        .validation_snapshots
        .iter()
        .map(|s| parse_timestamp(s).unwrap())
        .collect();
    let (h, lookback) = (180 * DAY, 365 * DAY);
    let rows = build_rows(&log, &at, h, lookback, &everyone, &keep_all, &Silent).unwrap();
    assert_eq!(rows.len() as u64, model.0.profile.as_ref().unwrap().rows);
    let shifted = FEATURE_NAMES
        .iter()
        .position(|n| *n == "spend_365d")
        .unwrap();

    let server = TestServer::start(&path, |_| {}).await;
    until_serving(&server).await;
    let mut c = server.scoring().await;
    let items: Vec<pb::ScoreRequest> = (0..rows.len())
        .map(|i| {
            let mut x = rows.x.row(i).to_vec();
            x[shifted] = x[shifted] * 4.0 + 500.0;
            features_request(&format!("c{i}"), x)
        })
        .collect();
    for chunk in items.chunks(1_000) {
        let r = c
            .batch_score(pb::BatchScoreRequest {
                items: chunk.to_vec(),
                feature_names: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r
            .results
            .iter()
            .all(|x| matches!(x.result, Some(pb::batch_item::Result::Score(_)))));
    }

    let m = server.metrics().await;
    let counted = m
        .lines()
        .find_map(|l| l.strip_prefix("loyalscore_drift_rows "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(counted, Some(rows.len() as f64));
    for (j, name) in FEATURE_NAMES.iter().enumerate() {
        let psi = gauge(&m, "loyalscore_feature_psi", "feature", name)
            .unwrap_or_else(|| panic!("no PSI for {name}"));
        if j == shifted {
            assert!(psi > 0.25, "{name}: PSI {psi}");
        } else {
            assert!(psi < 0.1, "{name}: PSI {psi} though not shifted");
        }
    }
    let churn = gauge(&m, "loyalscore_score_psi", "score", "churn").unwrap();
    eprintln!(
        "PSI of spend_365d {:?}, of churn {churn}",
        gauge(&m, "loyalscore_feature_psi", "feature", "spend_365d")
    );

    // The CLI reads the same from the gRPC port.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loyalscore"))
        .args([
            "drift",
            "--server",
            &format!("http://{}", server.addr),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let readings: Vec<(&str, &str)> = v["distributions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "feature")
        .map(|d| (d["name"].as_str().unwrap(), d["reading"].as_str().unwrap()))
        .collect();
    assert_eq!(readings.len(), FEATURE_NAMES.len());
    assert!(
        readings
            .iter()
            .all(|&(n, r)| (r == "shifted") == (n == "spend_365d")),
        "{readings:?}"
    );
    assert_eq!(v["rows"], rows.len() as u64);
    server.stop().await;
}

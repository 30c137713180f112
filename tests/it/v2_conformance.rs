//! KServe V2 as the standard clients use it: NVIDIA's `tritonclient` (installed into .venv by
//! the test script) against a real server, through `scripts/kserve_v2_check.py`; every score
//! it reads back equals BatchScore's for the same features.

use std::process::Command;

use loyalscore::proto::v1 as pb;
use serde_json::Value;

use crate::server::{features_request, production_v001, typical, until_serving, TestServer};
use crate::support::text;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kserve_v2_check.py");

/// 1,000 plausible feature rows, each different.
fn rows() -> Vec<Vec<f64>> {
    (0..1000)
        .map(|k| {
            let mut v = typical();
            v[0] = (k % 400) as f64;
            v[1] = 200.0 + (k % 900) as f64;
            v[8] = 50.0 * (k % 23) as f64;
            v[12] = 5.0 + (k % 60) as f64;
            v
        })
        .collect()
}

/// BatchScore's churn and CLV for the rows.
async fn batch_scores(server: &TestServer, rows: &[Vec<f64>]) -> Vec<(f64, f64)> {
    let items = rows
        .iter()
        .enumerate()
        .map(|(i, r)| features_request(&format!("c{i}"), r.clone()))
        .collect();
    let r = server
        .scoring()
        .await
        .batch_score(pb::BatchScoreRequest {
            items,
            feature_names: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    r.results
        .into_iter()
        .map(|i| match i.result {
            Some(pb::batch_item::Result::Score(s)) => (s.churn_probability, s.clv),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn scores_of(v: &Value) -> Vec<(f64, f64)> {
    let col = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    col("churn_probability")
        .into_iter()
        .zip(col("clv"))
        .collect()
}

fn python() -> String {
    std::env::var("LOYALSCORE_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_reads_metadata_and_scores_like_batch_score() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("models");
    production_v001(path.to_str().unwrap()).await;
    let server = TestServer::start(path.to_str().unwrap(), |_| {}).await;
    until_serving(&server).await;
    let rows = rows();
    let rows_file = dir.path().join("rows.json");
    std::fs::write(&rows_file, serde_json::to_vec(&rows).unwrap()).unwrap();
    let want64 = batch_scores(&server, &rows).await;
    // FP32 inputs are the same features rounded to single precision.
    let rows32: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r.iter().map(|&v| f64::from(v as f32)).collect())
        .collect();
    let want32 = batch_scores(&server, &rows32).await;

    let out = tokio::task::block_in_place(|| {
        Command::new(python())
            .args([SCRIPT, "--url", &server.addr.to_string(), "--rows"])
            .arg(&rows_file)
            .output()
            .unwrap()
    });
    server.stop().await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(
        (&v["live"], &v["ready"], &v["model_ready"]),
        (&Value::Bool(true), &Value::Bool(true), &Value::Bool(true))
    );
    assert_eq!(v["server_metadata"]["name"], "loyalscore");
    let m = &v["model_metadata"];
    assert_eq!(m["name"], "loyalscore");
    assert_eq!(m["versions"], serde_json::json!(["v001"]));
    assert_eq!(m["inputs"][0]["datatype"], "FP64");
    assert_eq!(m["inputs"][0]["shape"], serde_json::json!(["-1", "29"]));
    let outputs: Vec<&str> = m["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(outputs, ["churn_probability", "clv"]);

    assert_eq!(scores_of(&v["snippet"]), want64[..1]);
    assert_eq!(scores_of(&v["fp64_1"]), want64[..1]);
    assert_eq!(scores_of(&v["fp64_n"]), want64);
    assert_eq!(scores_of(&v["fp32_1"]), want32[..1]);
    assert_eq!(scores_of(&v["fp32_n"]), want32);
    assert_eq!(v["fp64_n"]["model_version"], "v001");

    let e = &v["errors"];
    for k in [
        "ready_unknown_model",
        "metadata_unknown_model",
        "infer_unknown_model",
        "infer_unknown_version",
    ] {
        assert_eq!(e[k]["status"], "StatusCode.NOT_FOUND", "{k}: {}", e[k]);
    }
    for (k, says) in [
        ("infer_wrong_width", "inputs[0].shape"),
        ("infer_int_datatype", "inputs[0].datatype"),
    ] {
        assert_eq!(
            e[k]["status"], "StatusCode.INVALID_ARGUMENT",
            "{k}: {}",
            e[k]
        );
        assert!(
            e[k]["message"].as_str().unwrap().contains(says),
            "{k}: {}",
            e[k]
        );
    }
}

/// The README shows the very function the conformance test runs.
#[test]
fn the_readme_snippet_is_the_tested_one() {
    let script = std::fs::read_to_string(SCRIPT).unwrap();
    let start = script.find("# --- snippet start ---\n").unwrap() + 24;
    let end = script.find("# --- snippet end ---").unwrap();
    let snippet = &script[start..end];
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains(snippet), "README must quote:\n{snippet}");
}

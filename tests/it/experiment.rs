//! A/B experiments end to end: a traffic document in a real registry, a real server routing
//! by it, shadow scoring, the exposure log, and the read-out against later transactions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use loyalscore::exposure::{read_all, CustomerKey};
use loyalscore::features::N_FEATURES;
use loyalscore::proto::v1 as pb;
use loyalscore::proto::v1::registry_client::RegistryClient;
use loyalscore::registry::{Expect, Experiment, Move, Registry};
use loyalscore::routing::{assign, Arm};
use loyalscore::trainer::experiment::{report, ReportOptions};
use loyalscore::trainer::{load_transactions, LoadOptions};

use crate::server::{
    admin, features_request, production_v001, typical, until_serving, wait_for, TestServer,
};
use crate::support::{promote, publish, publish_model, publish_other, train_on};

const KEY: &str = "test-exposure-key-0123456789";

fn arms(control: &str, challenger: &str) -> Vec<Arm> {
    vec![
        Arm {
            name: "control".into(),
            version: control.into(),
            weight: 90,
        },
        Arm {
            name: "challenger".into(),
            version: challenger.into(),
            weight: 10,
        },
    ]
}

/// A customer's feature vector that varies with `i`, so scores differ between customers.
fn features(i: usize) -> Vec<f64> {
    let mut v = typical();
    v[0] = (i % 200) as f64;
    v[3] = (i % 17) as f64;
    v
}

fn batch(ids: std::ops::Range<usize>) -> pb::BatchScoreRequest {
    pb::BatchScoreRequest {
        items: ids
            .map(|i| features_request(&format!("C{i:07}"), features(i)))
            .collect(),
        feature_names: vec![],
    }
}

fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

/// 90/10 on the real server: responses name experiment and arm, the arm is the pure
/// assignment, metrics cover both arms, the shadow version is scored but never answers, a
/// pinned version bypasses the experiment, exposures carry hashed ids only, and stopping the
/// experiment under load fails no request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_90_10_experiment_routes_measures_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry").to_str().unwrap().to_string();
    let exposures = dir.path().join("exposures").to_str().unwrap().to_string();
    let reg = production_v001(&path).await;
    publish(&reg, "v002").await;
    publish_other(&reg, "v003").await;
    let exp_dir = exposures.clone();
    let server = TestServer::start(&path, move |c| {
        c.poll_interval_secs = 3600;
        c.exposure_log = Some(exp_dir);
        c.exposure_key = Some(KEY.into());
    })
    .await;
    until_serving(&server).await;
    let mut scoring = server.scoring().await;

    // The plain answers of v001 and v003 for every customer, before any experiment.
    let n = 3000;
    let plain = |version: &str| {
        let mut b = batch(0..n);
        for item in &mut b.items {
            item.version = version.into();
        }
        b
    };
    let v001 = answers_of(
        scoring
            .batch_score(plain("v001"))
            .await
            .unwrap()
            .into_inner(),
    );
    let v003 = answers_of(
        scoring
            .batch_score(plain("v003"))
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(
        v001.iter()
            .zip(&v003)
            .any(|(a, b)| a.churn_probability != b.churn_probability),
        "the shadow model must differ from the control for this test to mean anything"
    );

    let mut registry = RegistryClient::new(server.channel().await);
    let set = registry
        .set_traffic(admin(pb::SetTrafficRequest {
            experiment: "exp-90-10".into(),
            arms: arms("v001", "v002")
                .into_iter()
                .map(|a| pb::TrafficArm {
                    name: a.name,
                    version: a.version,
                    weight: a.weight,
                })
                .collect(),
            shadow: vec!["v003".into()],
            expect_seq: Some(0),
            reason: "test".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((set.seq, set.action.as_str()), (1, "set"));

    let routed = answers_of(scoring.batch_score(batch(0..n)).await.unwrap().into_inner());
    let again = answers_of(scoring.batch_score(batch(0..n)).await.unwrap().into_inner());
    let expected_arms = arms("v001", "v002");
    let mut challenger = 0;
    for (i, r) in routed.iter().enumerate() {
        let want = assign(&expected_arms, "exp-90-10", &r.customer_id).unwrap();
        assert_eq!(r.experiment, "exp-90-10");
        assert_eq!(r.arm, want.name, "customer {i}");
        assert_eq!(r.model_version, want.version, "customer {i}");
        assert_eq!(again[i].arm, r.arm, "customer {i} changed arm");
        // The shadow (v003) never answers: each answer is exactly its arm's plain answer
        // (v002 is the same model as v001 under another id).
        assert_eq!(
            r.churn_probability, v001[i].churn_probability,
            "customer {i}"
        );
        assert_eq!(r.clv, v001[i].clv, "customer {i}");
        challenger += usize::from(r.arm == "challenger");
    }
    let sd = (n as f64 * 0.1 * 0.9).sqrt();
    assert!(
        (challenger as f64 - n as f64 * 0.1).abs() < 4.0 * sd,
        "{challenger} of {n} in the challenger arm"
    );

    // A pinned version bypasses the experiment.
    let mut pinned = features_request("C0000001", typical());
    pinned.version = "v002".into();
    let r = scoring.score(pinned).await.unwrap().into_inner();
    assert_eq!(
        (
            r.model_version.as_str(),
            r.experiment.as_str(),
            r.arm.as_str()
        ),
        ("v002", "", "")
    );

    // Metrics: both arms, and the shadow scored every routed customer, with a disagreement.
    let routed_total = 2.0 * n as f64;
    wait_for(async || {
        metric(
            &server.metrics().await,
            "loyalscore_shadow_scores_total",
            &["v003"],
        ) == Some(routed_total)
    })
    .await;
    let m = server.metrics().await;
    let control = metric(
        &m,
        "loyalscore_experiment_requests_total",
        &["arm=\"control\""],
    )
    .unwrap();
    let chall = metric(
        &m,
        "loyalscore_experiment_requests_total",
        &["arm=\"challenger\""],
    )
    .unwrap();
    assert_eq!(control + chall, routed_total);
    assert_eq!(chall, 2.0 * challenger as f64);
    assert!(
        metric(
            &m,
            "loyalscore_experiment_churn_probability_count",
            &["arm=\"challenger\""]
        )
        .unwrap()
            > 0.0
    );
    let diff_sum = metric(&m, "loyalscore_shadow_churn_abs_diff_sum", &["v003"]).unwrap();
    let want_diff: f64 = v001
        .iter()
        .zip(&v003)
        .map(|(a, b)| (a.churn_probability - b.churn_probability).abs())
        .sum::<f64>()
        * 2.0;
    assert!(
        (diff_sum - want_diff).abs() < 1e-6 * want_diff.max(1.0),
        "shadow disagreement {diff_sum} vs {want_diff}"
    );

    // Stop under load: no failed request, and after the stop every answer is the alias's.
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::new(AtomicBool::new(false));
    let (ok, failed, late) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut clients = Vec::new();
    for k in 0..4 {
        let mut client = server.scoring().await;
        let (stop, stopped, ok, failed, late) = (
            stop.clone(),
            stopped.clone(),
            ok.clone(),
            failed.clone(),
            late.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut i = k;
            while !stop.load(Ordering::Relaxed) {
                let after = stopped.load(Ordering::SeqCst);
                match client
                    .score(features_request(&format!("L{i:07}"), typical()))
                    .await
                {
                    Ok(r) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let r = r.into_inner();
                        if after && (!r.experiment.is_empty() || r.model_version != "v001") {
                            late.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 4;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stop_rec = registry
        .stop_traffic(admin(pb::StopTrafficRequest {
            expect_seq: Some(1),
            reason: "test over".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    stopped.store(true, Ordering::SeqCst);
    assert_eq!(
        (
            stop_rec.seq,
            stop_rec.action.as_str(),
            stop_rec.experiment.as_str()
        ),
        (2, "stop", "")
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "too few requests to mean anything"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the stop"
    );
    assert_eq!(
        late.load(Ordering::Relaxed),
        0,
        "experiment answers after the stop returned"
    );

    let scored_in_experiment = metric(
        &server.metrics().await,
        "loyalscore_exposures_total",
        &["queued"],
    )
    .unwrap();
    server.stop().await;

    // The exposure log was flushed on shutdown, holds every routed answer, and no raw id.
    let log = read_all(&exposures).await.unwrap();
    assert_eq!(log.len() as f64, scored_in_experiment);
    assert!(log.len() >= 2 * n);
    let key = CustomerKey::new(KEY).unwrap();
    let by_hash: HashMap<String, &pb::ScoreResponse> = routed
        .iter()
        .map(|r| (key.hash(&r.customer_id), r))
        .collect();
    for e in &log {
        let r = by_hash.get(&e.customer).copied();
        if let Some(r) = r {
            assert_eq!(
                (e.arm.as_str(), e.version.as_str()),
                (r.arm.as_str(), r.model_version.as_str())
            );
            assert_eq!(e.churn_probability, Some(r.churn_probability));
        }
    }
    for f in crate::support::files_below(std::path::Path::new(&exposures)) {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("C000") && !text.contains("L000"),
            "{} holds a raw customer id",
            f.display()
        );
    }
}

/// A traffic document naming a version that is missing is refused when set; one corrupted
/// in the store is skipped by the server, which keeps routing as before and counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_traffic_document_keeps_the_old_routing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let reg = production_v001(&path).await;
    publish(&reg, "v002").await;
    let who = who();
    let exp = |arms| Experiment {
        name: "e1".into(),
        salt: "e1".into(),
        arms,
        shadow: vec![],
        holdout: 0.0,
    };
    let err = reg
        .set_traffic("production", exp(arms("v001", "v404")), None, &who)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("v404"), "{err}");
    reg.set_traffic("production", exp(arms("v001", "v002")), Some(0), &who)
        .await
        .unwrap();

    let server = TestServer::start(&path, |c| c.poll_interval_secs = 1).await;
    until_serving(&server).await;
    until_experiment(&server, "e1").await;
    let mut scoring = server.scoring().await;
    // A corrupt record 2 lands in the store (a hand edit, a broken tool).
    std::fs::write(
        dir.path().join("traffic/production/000000000002.json"),
        b"{ not json",
    )
    .unwrap();
    wait_for(async || {
        metric(
            &server.metrics().await,
            "loyalscore_traffic_loads_total",
            &["failed"],
        )
        .is_some_and(|v| v >= 1.0)
    })
    .await;
    for i in 0..50 {
        let r = scoring
            .score(features_request(&format!("C{i:07}"), vec![0.0; N_FEATURES]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.experiment, "e1", "the old routing stays");
    }
    server.stop().await;
}

/// The holdout gets no model score and the response says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holdout_customers_get_no_model_score() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let reg = production_v001(&path).await;
    let who = who();
    let e = Experiment {
        name: "with-holdout".into(),
        salt: "s".into(),
        arms: vec![Arm {
            name: "model".into(),
            version: "v001".into(),
            weight: 1,
        }],
        shadow: vec![],
        holdout: 0.2,
    };
    reg.set_traffic("production", e, None, &who).await.unwrap();
    let server = TestServer::start(&path, |_| {}).await;
    until_experiment(&server, "with-holdout").await;
    let mut scoring = server.scoring().await;
    let mut held = 0;
    let r = answers_of(
        scoring
            .batch_score(batch(0..2000))
            .await
            .unwrap()
            .into_inner(),
    );
    for r in &r {
        if r.holdout {
            held += 1;
            assert_eq!(r.arm, "holdout");
            assert_eq!((r.model_version.as_str(), r.segment.as_str()), ("", ""));
        } else {
            assert_eq!(
                (r.arm.as_str(), r.model_version.as_str()),
                ("model", "v001")
            );
        }
    }
    let sd = (2000.0f64 * 0.2 * 0.8).sqrt();
    assert!(
        (held as f64 - 400.0).abs() < 4.0 * sd,
        "{held} of 2000 held out"
    );
    // Bad input from a held-out customer is still refused.
    let bad = scoring
        .batch_score(pb::BatchScoreRequest {
            items: (0..50)
                .map(|i| features_request(&format!("C{i:07}"), vec![f64::NAN; N_FEATURES]))
                .collect(),
            feature_names: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(bad
        .results
        .iter()
        .all(|x| matches!(x.result, Some(pb::batch_item::Result::Error(_)))));
    server.stop().await;
}

/// The exposure log on a real S3 API (moto): batches become objects, closing flushes the rest,
/// and everything reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposures_land_in_s3() {
    use loyalscore::exposure::{read_from, start_on, Exposure, SinkOptions};
    let moto = crate::moto::Moto::start();
    let store = moto.store();
    let prefix = crate::moto::Moto::prefix().join("exposures");
    let opts = SinkOptions {
        capacity: 1000,
        batch: 10,
        interval: std::time::Duration::from_secs(3600),
    };
    let key = CustomerKey::new(KEY).unwrap();
    let (log, writer) = start_on(store.clone(), prefix.clone(), key.clone(), opts);
    for i in 0..25 {
        assert!(log.record(Exposure {
            customer: key.hash(&format!("C{i:07}")),
            experiment: "s3".into(),
            arm: "control".into(),
            version: "v001".into(),
            churn_probability: Some(0.25),
            clv: Some(12.5),
            horizon_days: 180,
            as_of: "2025-01-01T00:00:00Z".into(),
            at: "2025-01-01T00:00:00Z".into(),
        }));
    }
    drop(log);
    let stats = writer
        .close(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        (stats.written, stats.lost, stats.objects),
        (25, 0, 3),
        "{stats:?}"
    );
    let back = read_from(&store, &prefix).await.unwrap();
    assert_eq!(back.len(), 25);
    assert!(back
        .iter()
        .all(|e| e.experiment == "s3" && e.customer.len() == 32));
}

/// Waits until the server routes by the experiment `name`.
async fn until_experiment(server: &TestServer, name: &str) {
    let mut scoring = server.scoring().await;
    wait_for(async || {
        scoring
            .score(features_request("C0000001", typical()))
            .await
            .is_ok_and(|r| r.into_inner().experiment == name)
    })
    .await;
}

fn who() -> Move {
    Move {
        actor: "t".into(),
        reason: "test".into(),
    }
}

fn answers_of(r: pb::BatchScoreResponse) -> Vec<pb::ScoreResponse> {
    r.results
        .into_iter()
        .map(|x| match x.result.unwrap() {
            pb::batch_item::Result::Score(s) => s,
            pb::batch_item::Result::Error(e) => panic!("item failed: {e:?}"),
        })
        .collect()
}

const DAY: i64 = 86_400;

/// Lines of a generated log (sorted by time) before `t`, optionally of the first customers only.
fn lines_before(csv: &str, t: i64, max_customer: Option<u32>) -> Vec<u8> {
    let mut out = String::new();
    for (i, line) in csv.lines().enumerate() {
        let keep = i == 0 || {
            let mut cols = line.split(',');
            let id = cols.next().unwrap();
            let ts = loyalscore::time::parse_timestamp(cols.next().unwrap()).unwrap();
            ts < t && max_customer.is_none_or(|m| id[1..].parse::<u32>().unwrap() <= m)
        };
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.into_bytes()
}

/// On generated data where the challenger is truly better (a real forest on every customer
/// against two depth-2 trees on 150 customers), customers are scored through the real server
/// in a 50/50 experiment, and the read-out against the later log names the challenger ahead
/// on churn ROC-AUC with an interval above zero. The CLI prints the same verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_read_out_names_the_truly_better_challenger() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = crate::support::sample(dir.path(), 4000, 900, 5);
    let text = std::fs::read_to_string(&csv).unwrap();
    let t = loyalscore::time::parse_timestamp("2023-01-01").unwrap() + 700 * DAY;
    let before = lines_before(&text, t, None);
    let control = train_on(&lines_before(&text, t, Some(150)), 2, 2, 1);
    let challenger = train_on(&before, 30, 10, 2);

    let path = dir.path().join("registry").to_str().unwrap().to_string();
    let exposures = dir.path().join("exposures").to_str().unwrap().to_string();
    let reg = Registry::open(&path).unwrap();
    publish_model(&reg, "weak", &control).await;
    publish_model(&reg, "strong", &challenger).await;
    promote(&reg, "weak", Expect::Absent).await;
    let who = who();
    let e = Experiment {
        name: "readout".into(),
        salt: "readout".into(),
        arms: vec![
            Arm {
                name: "control".into(),
                version: "weak".into(),
                weight: 50,
            },
            Arm {
                name: "challenger".into(),
                version: "strong".into(),
                weight: 50,
            },
        ],
        shadow: vec![],
        holdout: 0.0,
    };
    reg.set_traffic("production", e, None, &who).await.unwrap();
    let exp_dir = exposures.clone();
    let server = TestServer::start(&path, move |c| {
        c.exposure_log = Some(exp_dir);
        c.exposure_key = Some(KEY.into());
    })
    .await;
    until_serving(&server).await;
    until_experiment(&server, "readout").await;
    let mut scoring = server.scoring().await;

    // Every customer with a purchase before T, scored from their history as of T.
    let seen = load_transactions(&before[..], "before", &LoadOptions::default(), |_| {}).unwrap();
    let as_of = prost_types::Timestamp {
        seconds: t,
        nanos: 0,
    };
    let items: Vec<pb::ScoreRequest> = (0..seen.n_customers())
        .map(|c| pb::ScoreRequest {
            customer_id: seen.ids[c].clone(),
            input: Some(pb::score_request::Input::History(pb::History {
                transactions: seen
                    .customer(c)
                    .iter()
                    .map(|r| pb::Transaction {
                        time: Some(prost_types::Timestamp {
                            seconds: r.ts,
                            nanos: 0,
                        }),
                        amount: r.amount,
                        ..Default::default()
                    })
                    .collect(),
            })),
            as_of: Some(as_of),
            ..Default::default()
        })
        .collect();
    let mut scored = 0;
    for chunk in items.chunks(1000) {
        let r = scoring
            .batch_score(pb::BatchScoreRequest {
                items: chunk.to_vec(),
                feature_names: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        scored += answers_of(r).len();
    }
    server.stop().await;
    assert!(scored > 3000, "{scored} customers scored");

    let log = read_all(&exposures).await.unwrap();
    let full = load_transactions(text.as_bytes(), "full", &LoadOptions::default(), |_| {}).unwrap();
    let key = CustomerKey::new(KEY).unwrap();
    let r = report(&log, &full, &key, None, &ReportOptions::default()).unwrap();
    assert_eq!(r.customers, scored);
    assert_eq!(r.incomplete, 0);
    let auc = r
        .comparisons
        .iter()
        .find(|c| c.metric == "churn_roc_auc")
        .unwrap();
    assert_eq!(
        (auc.arm.as_str(), auc.control.as_str()),
        ("challenger", "control")
    );
    assert!(
        auc.difference.low > 0.0,
        "challenger AUC ahead by {:?}",
        auc.difference
    );
    assert_eq!(auc.leader(0.95).map(|l| l.0), Some("challenger"));
    let arm = |n: &str| r.arms.iter().find(|a| a.arm == n).unwrap();
    let (ca, ch) = (arm("control"), arm("challenger"));
    for a in [ca, ch] {
        let auc = a.churn_roc_auc.unwrap();
        assert!(auc.low <= auc.value && auc.value <= auc.high, "{auc:?}");
    }
    assert!(ch.clv_mae.unwrap().value < ca.clv_mae.unwrap().value);

    // The CLI reads out the same verdict, and draws it as a page.
    let page = dir.path().join("readout.html");
    let out = crate::support::train_cli(&[
        "experiment-report",
        "--exposures",
        &exposures,
        "--transactions",
        csv.to_str().unwrap(),
        "--exposure-key",
        KEY,
        "--html",
        page.to_str().unwrap(),
    ]);
    let stdout = crate::support::text(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        crate::support::text(&out.stderr)
    );
    assert!(
        stdout.contains("churn_roc_auc challenger vs control")
            && stdout.contains("challenger is ahead"),
        "{stdout}"
    );
    // Calibration, churn and CLV gains, and a forest plot per compared metric, each drawn in
    // a real browser with no request made.
    let watch = crate::report::Watch::start();
    crate::report::assert_all_drawn(&page, &watch, 7);
    crate::report::screenshot(&page, "experiment-readout.png", &watch);
    assert_eq!(watch.requests(), Vec::<String>::new());

    // Under another key (the README's `openssl rand` run twice) no exposed customer is found
    // in the log: an error that points at the key, not a read-out of everyone churned.
    let out = crate::support::train_cli(&[
        "experiment-report",
        "--exposures",
        &exposures,
        "--transactions",
        csv.to_str().unwrap(),
        "--exposure-key",
        "another-key-of-32-characters-xyz",
    ]);
    let stderr = crate::support::text(&out.stderr);
    assert!(
        !out.status.success(),
        "{}",
        crate::support::text(&out.stdout)
    );
    assert!(
        stderr.contains("is in the transactions") && stderr.contains("exposure key"),
        "{stderr}"
    );
}

//! Training/serving skew: for generated customers, the feature rows the trainer builds equal
//! what the server computes from the same history at the same as_of, bit for bit, and so do
//! the scores, the segments and the timing fields (offline scoring of the trainer's rows
//! against the server's answers).

use loyalscore::cli::score_log::history_request;
use loyalscore::features::{FeatureVector, DAY};
use loyalscore::proto::v1 as pb;
use loyalscore::scoring::{score, Explain, Model};
use loyalscore::trainer::dataset::{build_rows, everyone, keep_all};
use loyalscore::trainer::{load_transactions, LoadOptions, Silent};

use crate::server::{production_v001, until_serving, TestServer};
use crate::support::sample;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trainer_and_server_compute_the_same_features_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = sample(dir.path(), 600, 700, 17);
    let log = load_transactions(
        std::fs::File::open(&csv).unwrap(),
        "s",
        &LoadOptions::default(),
        |_| {},
    )
    .unwrap();
    let as_of = (log.quality.last_ts.div_euclid(DAY) - 100) * DAY;
    let rows = build_rows(
        &log,
        &[as_of],
        180 * DAY,
        365 * DAY,
        &everyone,
        &keep_all,
        &Silent,
    )
    .unwrap();
    assert!(rows.len() > 300, "{}", rows.len());

    let path = dir.path().join("registry");
    let reg = production_v001(path.to_str().unwrap()).await;
    let (manifest, bundle) = reg.load("v001").await.unwrap();
    let model = Model::new(manifest, bundle.clone()).unwrap();
    let server = TestServer::start(path.to_str().unwrap(), |_| {}).await;
    until_serving(&server).await;

    let items: Vec<pb::ScoreRequest> = (0..rows.len())
        .map(|i| pb::ScoreRequest {
            explain: true,
            ..history_request(&log, rows.cust[i] as usize, as_of, "")
        })
        .collect();
    let churn: Vec<f64> = bundle
        .churn
        .predict(&rows.x)
        .into_iter()
        .map(|p| bundle.calibration.apply(p))
        .collect();
    let clv = bundle.clv.predict(&rows.x);
    let r = server
        .scoring()
        .await
        .batch_score(pb::BatchScoreRequest {
            items,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), rows.len());
    for (i, item) in r.results.iter().enumerate() {
        let Some(pb::batch_item::Result::Score(s)) = &item.result else {
            panic!("row {i} failed: {:?}", item.result);
        };
        let served = &s.features.as_ref().unwrap().values;
        let trained = rows.x.row(i);
        for (j, (a, b)) in served.iter().zip(trained).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "row {i} feature {j}: served {a}, trained {b}"
            );
        }
        assert_eq!(
            s.churn_probability.to_bits(),
            churn[i].to_bits(),
            "row {i} churn"
        );
        let x: FeatureVector = trained.try_into().unwrap();
        let offline = score(&model, &x, rows.as_of(i), Explain::default());
        let t = offline.timing;
        let secs = |ts: &Option<prost_types::Timestamp>| ts.as_ref().unwrap().seconds;
        assert_eq!(s.segment, offline.segment.as_str(), "row {i} segment");
        assert_eq!(
            s.typical_gap_days.to_bits(),
            t.typical_gap_days.to_bits(),
            "row {i}"
        );
        assert_eq!(
            s.days_overdue.to_bits(),
            t.days_overdue.to_bits(),
            "row {i}"
        );
        assert_eq!(
            s.overdue_percentile.to_bits(),
            t.overdue_percentile.to_bits(),
            "row {i}"
        );
        assert_eq!(
            secs(&s.expected_next_purchase),
            t.expected_next_purchase,
            "row {i}"
        );
        assert_eq!(secs(&s.contact_from), t.contact_from, "row {i}");
        assert_eq!(secs(&s.contact_by), t.contact_by, "row {i}");
        assert_eq!(s.clv.to_bits(), clv[i].max(0.0).to_bits(), "row {i} clv");
    }
    server.stop().await;
}

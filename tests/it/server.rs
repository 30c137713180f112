//! The real server on 127.0.0.1:0 against a real local registry, called by real tonic clients.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loyalscore::features::{FEATURE_NAMES, N_FEATURES};
use loyalscore::flags::{LogArgs, RegistryArgs, StateArgs};
use loyalscore::proto::v1 as pb;
use loyalscore::proto::v1::registry_client::RegistryClient;
use loyalscore::proto::v1::scoring_client::ScoringClient;
use loyalscore::registry::{Expect, Move, Registry};
use loyalscore::server::{serve, Config};
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::support::{promote, publish};

pub const TOKEN: &str = "s3cret-admin-token-of-32-bytes-at-least";

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub metrics_addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(registry: &str, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::defaults().unwrap();
        config.listen = "127.0.0.1:0".into();
        config.registry = RegistryArgs::new(registry);
        config.poll_interval_secs = 1;
        config.metrics_listen = "127.0.0.1:0".into();
        config.drain_secs = 5;
        config.log = LogArgs::new("warn");
        config.admin_token = Some(TOKEN.into());
        config.state = StateArgs::off();
        tweak(&mut config);
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, metrics_addr) = (grpc.local_addr().unwrap(), metrics.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            serve(config, grpc, Some(metrics), async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            addr,
            metrics_addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn scoring(&self) -> ScoringClient<Channel> {
        ScoringClient::new(self.channel().await)
    }

    pub async fn health(&self, service: &str) -> ServingStatus {
        let mut h = HealthClient::new(self.channel().await);
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap();
        ServingStatus::try_from(r.into_inner().status).unwrap()
    }

    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.metrics_addr)
            .await
            .unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub fn admin<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

pub fn features_request(id: &str, values: Vec<f64>) -> pb::ScoreRequest {
    pb::ScoreRequest {
        customer_id: id.into(),
        input: Some(pb::score_request::Input::Features(pb::Features {
            names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            values,
        })),
        ..Default::default()
    }
}

pub fn typical() -> Vec<f64> {
    // A regular customer, 63 days since the last purchase, usually every 42.
    let mut v = vec![1.0; N_FEATURES];
    let set = |v: &mut Vec<f64>, n: &str, x: f64| {
        v[FEATURE_NAMES.iter().position(|f| *f == n).unwrap()] = x
    };
    set(&mut v, "recency_days", 63.0);
    set(&mut v, "tenure_days", 700.0);
    set(&mut v, "purchases_total", 16.0);
    set(&mut v, "visits_total", 16.0);
    set(&mut v, "mean_gap_days", 42.0);
    set(&mut v, "overdue_ratio", 1.5);
    set(&mut v, "spend_365d", 400.0);
    v
}

/// A registry at `path` with `v001` published and in production.
pub async fn production_v001(path: &str) -> Registry {
    let reg = Registry::open(path).unwrap();
    publish(&reg, "v001").await;
    promote(&reg, "v001", Expect::Absent).await;
    reg
}

/// Waits until the server reports SERVING.
pub async fn until_serving(server: &TestServer) {
    wait_for(async || server.health("").await == ServingStatus::Serving).await;
}

pub async fn wait_for(mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not reached in 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_follows_the_first_promotion() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let server = TestServer::start(&path, |_| {}).await;
    assert_eq!(server.health("").await, ServingStatus::NotServing);
    assert_eq!(
        server.health("liveness").await,
        ServingStatus::Serving,
        "alive without a model"
    );
    assert_eq!(
        server.health("loyalscore.v1.Scoring").await,
        ServingStatus::NotServing
    );
    let err = server
        .scoring()
        .await
        .score(features_request("c1", typical()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);

    let reg = Registry::open(&path).unwrap();
    publish(&reg, "v001").await;
    promote(&reg, "v001", Expect::Absent).await;
    wait_for(async || server.health("loyalscore.v1.Scoring").await == ServingStatus::Serving).await;
    assert_eq!(server.health("").await, ServingStatus::Serving);
    let r = server
        .scoring()
        .await
        .score(features_request("c1", typical()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model_version, "v001");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_swap_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let reg = Registry::open(&path).unwrap();
    publish(&reg, "v001").await;
    publish(&reg, "v002").await;
    promote(&reg, "v001", Expect::Absent).await;
    // A long poll interval: the swap must come from the admin Promote, at once.
    let server = TestServer::start(&path, |c| c.poll_interval_secs = 3600).await;
    until_serving(&server).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, after_swap_old) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let promoted = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for k in 0..4 {
        let mut client = server.scoring().await;
        let (stop, ok, failed, promoted, after_swap_old) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            promoted.clone(),
            after_swap_old.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let was_promoted = promoted.load(Ordering::SeqCst);
                let req = if k % 2 == 0 {
                    features_request(&format!("c{k}"), typical())
                } else {
                    features_request(&format!("c{k}"), vec![0.0; N_FEATURES])
                };
                match client.score(req).await {
                    Ok(r) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let v = r.into_inner().model_version;
                        if was_promoted && v != "v002" {
                            after_swap_old.fetch_add(1, Ordering::Relaxed);
                        }
                        if seen.last() != Some(&v) {
                            seen.push(v);
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut admin_client = RegistryClient::new(server.channel().await);
    let mv = admin_client
        .promote(admin(pb::PromoteRequest {
            version: "v002".into(),
            expect: "v001".into(),
            reason: "better".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    promoted.store(true, Ordering::SeqCst);
    assert_eq!(
        (mv.version.as_str(), mv.previous.as_str(), mv.seq),
        ("v002", "v001", 2)
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let seen = c.await.unwrap();
        assert_eq!(
            seen,
            vec!["v001".to_string(), "v002".to_string()],
            "each client moved once, from old to new"
        );
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "zero failed requests");
    assert_eq!(
        after_swap_old.load(Ordering::Relaxed),
        0,
        "after Promote returned, only the new version answers"
    );
    assert!(ok.load(Ordering::Relaxed) > 100, "the clients kept sending");
    let m = server.metrics().await;
    assert!(
        m.contains("loyalscore_requests_total{code=\"OK\",method=\"Score\",version=\"v002\"}"),
        "{m}"
    );
    assert!(
        m.contains("loyalscore_active_model{version=\"v002\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("loyalscore_model_loads_total{result=\"ok\"} 2"),
        "{m}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_version_leaves_the_old_one_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let reg = Registry::open(&path).unwrap();
    publish(&reg, "v001").await;
    publish(&reg, "v002").await;
    let who = Move {
        actor: "t".into(),
        reason: "x".into(),
    };
    reg.set_alias("production", "v001", &Expect::Absent, &who)
        .await
        .unwrap();
    let server = TestServer::start(&path, |_| {}).await;
    until_serving(&server).await;
    // Promote v002, then corrupt its bundle behind the registry's back.
    reg.set_alias("production", "v002", &Expect::Any, &who)
        .await
        .unwrap();
    let bundle = dir.path().join("versions/v002/model.bin");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&bundle, bytes).unwrap();
    wait_for(async || {
        server
            .metrics()
            .await
            .contains("loyalscore_model_loads_total{result=\"failed\"} 1")
    })
    .await;
    let r = server
        .scoring()
        .await
        .score(features_request("c1", typical()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model_version, "v001");
    assert_eq!(server.health("").await, ServingStatus::Serving);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let reg = Registry::open(&path).unwrap();
    publish(&reg, "v001").await;
    let server = TestServer::start(&path, |_| {}).await;
    let mut c = RegistryClient::new(server.channel().await);
    let err = c
        .list_versions(pb::ListVersionsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut wrong = tonic::Request::new(pb::ListVersionsRequest {});
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        c.list_versions(wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let list = c
        .list_versions(admin(pb::ListVersionsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.versions.len(), 1);
    let err = c
        .promote(admin(pb::PromoteRequest {
            version: "v404".into(),
            reason: "x".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.stop().await;

    // Without a configured token the admin service does not exist.
    let server = TestServer::start(&path, |c| c.admin_token = None).await;
    let mut c = RegistryClient::new(server.channel().await);
    assert_eq!(
        c.list_versions(admin(pb::ListVersionsRequest {}))
            .await
            .unwrap_err()
            .code(),
        Code::Unimplemented
    );
    server.stop().await;
}

fn history_request(id: &str, txs: Vec<pb::Transaction>, as_of: i64) -> pb::ScoreRequest {
    pb::ScoreRequest {
        customer_id: id.into(),
        input: Some(pb::score_request::Input::History(pb::History {
            transactions: txs,
        })),
        as_of: Some(prost_types::Timestamp {
            seconds: as_of,
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn tx(seconds: i64, amount: f64) -> pb::Transaction {
    pb::Transaction {
        time: Some(prost_types::Timestamp { seconds, nanos: 0 }),
        amount,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_clear_error_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    production_v001(&path).await;
    let server = TestServer::start(&path, |c| {
        c.max_batch = 5;
        c.max_history = 4;
    })
    .await;
    until_serving(&server).await;
    let mut c = server.scoring().await;
    let day = 86_400;
    let as_of = 1_750_000_000;

    let mut unknown = features_request("c", typical());
    if let Some(pb::score_request::Input::Features(f)) = &mut unknown.input {
        f.names[2] = "shoe_size".into();
    }
    let mut missing = features_request("c", typical());
    if let Some(pb::score_request::Input::Features(f)) = &mut missing.input {
        f.names.pop();
        f.values.pop();
    }
    let mut nan = typical();
    nan[3] = f64::NAN;
    let mut inf = typical();
    inf[0] = f64::INFINITY;
    let cases: Vec<(&str, pb::ScoreRequest, Code, &str)> = vec![
        (
            "unknown feature",
            unknown,
            Code::InvalidArgument,
            "features.names[2]",
        ),
        (
            "missing feature",
            missing,
            Code::InvalidArgument,
            "missing feature \"recency_log_z\"",
        ),
        (
            "NaN",
            features_request("c", nan),
            Code::InvalidArgument,
            "features.values[3]",
        ),
        (
            "infinite",
            features_request("c", inf),
            Code::InvalidArgument,
            "features.values[0]",
        ),
        (
            "empty id",
            features_request("", typical()),
            Code::InvalidArgument,
            "customer_id",
        ),
        (
            "no input",
            pb::ScoreRequest {
                customer_id: "c".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "input",
        ),
        (
            "after as_of",
            history_request("c", vec![tx(as_of - day, 5.0), tx(as_of + day, 5.0)], as_of),
            Code::InvalidArgument,
            "history.transactions[1].time",
        ),
        (
            "before 1970",
            history_request("c", vec![tx(-day, 5.0)], as_of),
            Code::InvalidArgument,
            "history.transactions[0].time: is before 1970",
        ),
        (
            "only a return",
            history_request("c", vec![tx(as_of - day, -5.0)], as_of),
            Code::InvalidArgument,
            "history.transactions: the customer has no purchase",
        ),
        (
            "amount too large",
            history_request("c", vec![tx(as_of - day, -2e9)], as_of),
            Code::InvalidArgument,
            "history.transactions[0].amount",
        ),
        (
            "unknown locale",
            pb::ScoreRequest {
                locale: "fr".into(),
                ..features_request("c", typical())
            },
            Code::InvalidArgument,
            "locale: \"fr\"",
        ),
        (
            "NaN amount",
            history_request("c", vec![tx(as_of - day, f64::NAN)], as_of),
            Code::InvalidArgument,
            "history.transactions[0].amount",
        ),
        (
            "missing time",
            history_request(
                "c",
                vec![pb::Transaction {
                    amount: 3.0,
                    ..Default::default()
                }],
                as_of,
            ),
            Code::InvalidArgument,
            "history.transactions[0].time: is missing",
        ),
        (
            "empty history",
            history_request("c", vec![], as_of),
            Code::InvalidArgument,
            "history.transactions: is empty",
        ),
        (
            "oversize history",
            history_request(
                "c",
                (1..=5).map(|i| tx(as_of - i * day, 1.0)).collect(),
                as_of,
            ),
            Code::InvalidArgument,
            "more than the limit of 4",
        ),
        (
            "as_of before 1970",
            history_request("c", vec![tx(day, 1.0)], -5),
            Code::InvalidArgument,
            "as_of",
        ),
        (
            "unknown pinned version",
            pb::ScoreRequest {
                version: "v404".into(),
                ..features_request("c", typical())
            },
            Code::NotFound,
            "version v404",
        ),
    ];
    for (name, req, code, needle) in cases {
        let err = c.score(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{name}: {}", err.message());
        assert!(
            err.message().contains(needle),
            "{name}: {:?} should contain {needle:?}",
            err.message()
        );
        // The server keeps serving.
        c.score(features_request("ok", typical())).await.unwrap();
    }

    // Oversize batch: the whole call is refused, naming the limit.
    let big = pb::BatchScoreRequest {
        items: (0..6)
            .map(|i| features_request(&format!("c{i}"), typical()))
            .collect(),
        ..Default::default()
    };
    let err = c.batch_score(big).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("more than the limit of 5"),
        "{}",
        err.message()
    );

    // A bad item gets its own error with its index; the others are scored.
    let mut bad = typical();
    bad[1] = f64::NAN;
    let items = vec![
        pb::ScoreRequest {
            customer_id: "a".into(),
            input: Some(pb::score_request::Input::Features(pb::Features {
                names: vec![],
                values: typical(),
            })),
            ..Default::default()
        },
        pb::ScoreRequest {
            customer_id: "b".into(),
            input: Some(pb::score_request::Input::Features(pb::Features {
                names: vec![],
                values: bad,
            })),
            ..Default::default()
        },
        history_request(
            "c",
            vec![tx(as_of - 10 * day, 30.0), tx(as_of - 3 * day, 20.0)],
            as_of,
        ),
    ];
    let names = FEATURE_NAMES.iter().map(|s| s.to_string()).collect();
    let r = c
        .batch_score(pb::BatchScoreRequest {
            items,
            feature_names: names,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 3);
    assert!(
        matches!(&r.results[0].result, Some(pb::batch_item::Result::Score(s)) if s.customer_id == "a" && s.model_version == "v001")
    );
    match &r.results[1].result {
        Some(pb::batch_item::Result::Error(e)) => {
            assert_eq!(r.results[1].index, 1);
            assert_eq!(
                (e.code.as_str(), e.field.as_str()),
                ("INVALID_ARGUMENT", "features.values[1]")
            );
        }
        other => panic!("item 1 should fail: {other:?}"),
    }
    assert!(
        matches!(&r.results[2].result, Some(pb::batch_item::Result::Score(s)) if s.customer_id == "c")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn explain_gives_three_readable_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    production_v001(&path).await;
    let server = TestServer::start(&path, |_| {}).await;
    until_serving(&server).await;
    let mut req = features_request("c", typical());
    req.explain = true;
    let r = server
        .scoring()
        .await
        .score(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.reasons.len(), 3);
    for reason in &r.reasons {
        assert!(reason.text.contains("churn risk"), "{}", reason.text);
        assert!(FEATURE_NAMES.contains(&reason.feature.as_str()));
    }
    assert!((0.0..=1.0).contains(&r.churn_probability));
    assert!([
        "at_risk_valuable",
        "dormant",
        "lapsing",
        "rising",
        "loyal",
        "steady"
    ]
    .contains(&r.segment.as_str()));
    assert_eq!(r.features.unwrap().values, typical());
    let plain = server
        .scoring()
        .await
        .score(features_request("c", typical()))
        .await
        .unwrap()
        .into_inner();
    assert!(plain.reasons.is_empty() && plain.features.is_none());
    assert_eq!(plain.churn_probability, r.churn_probability);
    server.stop().await;
}

/// KServe V2 ModelInfer answers what Score answers for the same features, from `contents` or
/// raw bytes; bad tensors are INVALID_ARGUMENT naming the field. The load generator's V2 and
/// health modes run against it without errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v2_model_infer_matches_score() {
    use loyalscore::proto::inference as v2;
    use loyalscore::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    production_v001(&path).await;
    let server = TestServer::start(&path, |_| {}).await;
    until_serving(&server).await;
    let rows: Vec<Vec<f64>> = (0..3)
        .map(|k| {
            let mut v = typical();
            v[0] = 10.0 * k as f64;
            v
        })
        .collect();
    let mut scoring = server.scoring().await;
    let mut want = Vec::new();
    for (k, r) in rows.iter().enumerate() {
        let s = scoring
            .score(features_request(&format!("c{k}"), r.clone()))
            .await
            .unwrap()
            .into_inner();
        want.push((s.churn_probability, s.clv));
    }
    let flat: Vec<f64> = rows.concat();
    let tensor = |datatype: &str, shape: Vec<i64>, values: Vec<f64>| {
        v2::model_infer_request::InferInputTensor {
            name: "input-0".into(),
            datatype: datatype.into(),
            shape,
            contents: Some(v2::InferTensorContents {
                fp64_contents: values,
                ..Default::default()
            }),
        }
    };
    let mut client = GrpcInferenceServiceClient::new(server.channel().await);
    let by_contents = v2::ModelInferRequest {
        model_name: "loyalscore".into(),
        id: "r1".into(),
        inputs: vec![tensor("FP64", vec![3, N_FEATURES as i64], flat.clone())],
        ..Default::default()
    };
    let mut raw = by_contents.clone();
    raw.inputs[0].contents = None;
    raw.raw_input_contents = vec![flat.iter().flat_map(|v| v.to_le_bytes()).collect()];
    for (req, raw_out) in [(by_contents.clone(), false), (raw, true)] {
        let r = client.model_infer(req).await.unwrap().into_inner();
        assert_eq!((r.model_version.as_str(), r.id.as_str()), ("v001", "r1"));
        // Raw bytes in, raw bytes out (in the order of the outputs); typed contents otherwise.
        assert_eq!(r.raw_output_contents.len(), if raw_out { 2 } else { 0 });
        let out = |name: &str| {
            let i = r.outputs.iter().position(|o| o.name == name).unwrap();
            match &r.outputs[i].contents {
                Some(c) => c.fp64_contents.clone(),
                None => r.raw_output_contents[i]
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            }
        };
        let (churn, clv) = (out("churn_probability"), out("clv"));
        for k in 0..3 {
            assert_eq!((churn[k], clv[k]), want[k], "row {k}");
        }
    }
    let mut nan = flat.clone();
    nan[N_FEATURES + 4] = f64::NAN;
    for (req, field) in [
        (tensor("FP64", vec![3, 5], flat.clone()), "inputs[0].shape"),
        (
            tensor("INT8", vec![3, N_FEATURES as i64], flat.clone()),
            "inputs[0].datatype",
        ),
        (
            tensor("FP64", vec![4, N_FEATURES as i64], flat.clone()),
            "inputs[0]",
        ),
        (
            tensor("FP64", vec![3, N_FEATURES as i64], nan),
            "inputs[0][1][4]",
        ),
    ] {
        let err = client
            .model_infer(v2::ModelInferRequest {
                inputs: vec![req],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
    }
    let ready = |name: &str, version: &str| v2::ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    let is_ready = async |client: &mut GrpcInferenceServiceClient<_>, r| {
        client.model_ready(r).await.unwrap().into_inner().ready
    };
    assert!(!is_ready(&mut client, ready("loyalscore", "v404")).await);
    assert!(is_ready(&mut client, ready("loyalscore", "")).await);
    let err = client.model_ready(ready("foo", "")).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "another model is not served here"
    );

    // FP64 data in the FP32 field is a type mismatch, said as such.
    let mut mismatch = by_contents.clone();
    mismatch.inputs[0].contents = Some(v2::InferTensorContents {
        fp32_contents: flat.iter().map(|&v| v as f32).collect(),
        ..Default::default()
    });
    let err = client.model_infer(mismatch).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("inputs[0].contents: datatype FP64 but the")
            && err.message().contains("fp32_contents"),
        "{}",
        err.message()
    );
    let mut other = by_contents.clone();
    other.model_name = "foo".into();
    let err = client.model_infer(other).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // The metadata standard clients read first.
    let sm = client
        .server_metadata(v2::ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sm.name, "loyalscore");
    let mm = client
        .model_metadata(v2::ModelMetadataRequest {
            name: "loyalscore".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (mm.name.as_str(), mm.versions.clone()),
        ("loyalscore", vec!["v001".to_string()])
    );
    assert_eq!(
        (mm.inputs[0].datatype.as_str(), mm.inputs[0].shape.clone()),
        ("FP64", vec![-1, N_FEATURES as i64])
    );
    let outs: Vec<&str> = mm.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outs, ["churn_probability", "clv"]);
    let err = client
        .model_metadata(v2::ModelMetadataRequest {
            name: "foo".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    for mode in ["v2", "health"] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loyalscore"))
            .args([
                "--json",
                "bench",
                "--server",
                &format!("http://{}", server.addr),
                "--mode",
                mode,
                "--batch-size",
                "10",
                "--requests",
                "50",
                "--warmup",
                "2",
            ])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (v["requests"].as_u64(), v["errors"].as_u64()),
            (Some(50), Some(0)),
            "{mode}: {v}"
        );
    }
    server.stop().await;
}

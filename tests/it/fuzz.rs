//! Property-based fuzzing with a fixed seed and a bounded case count, so CI runs the same
//! cases every time: arbitrary bytes and well-formed but hostile messages thrown at a real
//! server's decode → validate → score path, and arbitrary text at the CSV loader. Never a
//! panic, always a clear code; the server still answers afterwards.

use loyalscore::features::{FEATURE_NAMES, N_FEATURES};
use loyalscore::proto::inference as v2;
use loyalscore::proto::v1 as pb;
use loyalscore::registry::{Expect, Registry};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::hostile::{call_encoded, PreEncoded};
use crate::server::{wait_for, TestServer};
use crate::support::{promote, publish};

fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]))
}

/// The codes a hostile request may get: a clear refusal, or an answer. INTERNAL, UNKNOWN or
/// UNAVAILABLE would mean the server failed, not the request.
fn clear(code: Code) -> bool {
    matches!(
        code,
        Code::Ok
            | Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::OutOfRange
    )
}

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-1e308),
        Just(f64::MIN_POSITIVE / 2.0),
        -1e4..1e4f64,
    ]
}

fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    proptest::option::of(
        (prop_oneof![any::<i64>(), 0..4_000_000_000i64], any::<i32>())
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
}

fn transaction() -> impl Strategy<Value = pb::Transaction> {
    (timestamp(), any_f64(), any_f64(), any_f64(), ".{0,12}").prop_map(
        |(time, amount, points_earned, points_redeemed, channel)| pb::Transaction {
            time,
            amount,
            points_earned,
            points_redeemed,
            channel,
        },
    )
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(FEATURE_NAMES.to_vec()).prop_map(str::to_string),
        ".{0,20}",
    ]
}

fn input() -> impl Strategy<Value = Option<pb::score_request::Input>> {
    use pb::score_request::Input;
    let all_names: Vec<String> = FEATURE_NAMES.iter().map(|s| s.to_string()).collect();
    prop_oneof![
        Just(None),
        // The right names, any values.
        proptest::collection::vec(any_f64(), N_FEATURES).prop_map(move |values| Some(
            Input::Features(pb::Features {
                names: all_names.clone(),
                values,
            })
        )),
        // Any names, any values, any lengths.
        (
            proptest::collection::vec(name(), 0..40),
            proptest::collection::vec(any_f64(), 0..40)
        )
            .prop_map(|(names, values)| Some(Input::Features(pb::Features { names, values }))),
        proptest::collection::vec(transaction(), 0..30)
            .prop_map(|transactions| Some(Input::History(pb::History { transactions }))),
    ]
}

fn score_request() -> impl Strategy<Value = pb::ScoreRequest> {
    (
        ".{0,40}",
        input(),
        timestamp(),
        prop_oneof![Just(String::new()), Just("v001".to_string()), ".{0,30}"],
        any::<bool>(),
        prop_oneof![Just(String::new()), Just("de".to_string()), ".{0,8}"],
    )
        .prop_map(
            |(customer_id, input, as_of, version, explain, locale)| pb::ScoreRequest {
                customer_id,
                input,
                as_of,
                version,
                explain,
                locale,
            },
        )
}

/// The cases run on this thread; the server and the clients on the runtime's two.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn serving_server(dir: &std::path::Path) -> TestServer {
    let path = dir.to_str().unwrap();
    let reg = Registry::open(path).unwrap();
    publish(&reg, "v001").await;
    promote(&reg, "v001", Expect::Absent).await;
    let server = TestServer::start(path, |_| {}).await;
    wait_for(async || server.health("").await == ServingStatus::Serving).await;
    server
}

/// Arbitrary bytes as the Score, BatchScore and ModelInfer messages.
#[test]
fn arbitrary_bytes_get_a_clear_code_and_never_break_the_server() {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = rt.block_on(serving_server(dir.path()));
    let bytes = proptest::collection::vec(any::<u8>(), 0..600);
    runner(300)
        .run(&(bytes, 0..3usize), |(b, which)| {
            let req = tonic::Request::new(PreEncoded(b.into()));
            let code = rt.block_on(async {
                let r = match which {
                    0 => call_encoded::<pb::ScoreResponse>(
                        &server,
                        "/loyalscore.v1.Scoring/Score",
                        req,
                    )
                    .await
                    .map(|_| ()),
                    1 => call_encoded::<pb::BatchScoreResponse>(
                        &server,
                        "/loyalscore.v1.Scoring/BatchScore",
                        req,
                    )
                    .await
                    .map(|_| ()),
                    _ => call_encoded::<v2::ModelInferResponse>(
                        &server,
                        "/inference.GRPCInferenceService/ModelInfer",
                        req,
                    )
                    .await
                    .map(|_| ()),
                };
                r.map_or_else(
                    |s| (s.code(), s.message().to_string()),
                    |()| (Code::Ok, String::new()),
                )
            });
            prop_assert!(clear(code.0), "{:?}: {}", code.0, code.1);
            Ok(())
        })
        .unwrap();
    rt.block_on(async {
        let health = server.health("").await;
        assert_eq!(health, ServingStatus::Serving);
        server.stop().await;
    });
}

/// Well-formed messages with hostile contents: any strings (newlines, control characters,
/// long), any numbers (NaN, infinities, 1e308, subnormals), any timestamps and lengths.
/// An answer is always a probability and a finite CLV.
#[test]
fn hostile_well_formed_requests_get_a_clear_code_or_a_sane_answer() {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = rt.block_on(serving_server(dir.path()));
    let client = rt.block_on(server.scoring());
    runner(400)
        .run(&score_request(), |req| {
            let mut client = client.clone();
            match rt.block_on(client.score(req)) {
                Ok(r) => {
                    let r = r.into_inner();
                    prop_assert!((0.0..=1.0).contains(&r.churn_probability), "{r:?}");
                    prop_assert!(r.clv.is_finite(), "{r:?}");
                }
                Err(s) => prop_assert!(clear(s.code()), "{:?}: {}", s.code(), s.message()),
            }
            Ok(())
        })
        .unwrap();
    rt.block_on(server.stop());
}

/// Any text as a transaction file: loaded or refused with a message, never a panic.
#[test]
fn the_csv_loader_refuses_any_text_clearly() {
    use loyalscore::trainer::{load_transactions, LoadOptions};
    let header = "customer_id,timestamp,amount\n";
    let line = prop_oneof![
        ".{0,40}",
        (".{0,8}", 0..4_000_000_000i64, any_f64()).prop_map(|(c, t, a)| format!("{c},{t},{a}")),
        (".{0,8}", ".{0,12}", ".{0,12}").prop_map(|(c, t, a)| format!("{c};{t};{a}")),
    ];
    let file = (any::<bool>(), proptest::collection::vec(line, 0..30));
    runner(300)
        .run(&file, |(with_header, lines)| {
            let mut text = if with_header {
                header.to_string()
            } else {
                String::new()
            };
            text.push_str(&lines.join("\n"));
            let r = std::panic::catch_unwind(|| {
                load_transactions(text.as_bytes(), "fuzz.csv", &LoadOptions::default(), |_| {})
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
            match r {
                Ok(Ok(())) => {}
                Ok(Err(msg)) => prop_assert!(msg.starts_with("fuzz.csv"), "{msg}"),
                Err(_) => prop_assert!(false, "the loader panicked on {text:?}"),
            }
            Ok(())
        })
        .unwrap();
}

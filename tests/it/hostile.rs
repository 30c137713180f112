//! The server under hostile load, on loopback with real clients: huge batches beside a
//! victim, deadlines, floods of idle connections, pinned-version storms and load past the
//! concurrency limit. Bounded in count and time; figures go to BENCHMARKS.md, not asserts.

use std::time::{Duration, Instant};

use loyalscore::proto::v1 as pb;
use tonic::Code;

use crate::server::{features_request, production_v001, typical, until_serving, TestServer};
use crate::support::{publish, publish_other};

pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `items` customers of `txs` transactions each, spread over two years before 2026-01-01.
fn heavy_batch(items: usize, txs: usize) -> pb::BatchScoreRequest {
    let end = 1_767_225_600i64;
    let history: Vec<pb::Transaction> = (0..txs)
        .map(|k| pb::Transaction {
            time: Some(prost_types::Timestamp {
                seconds: end - 730 * 86_400 + (k as i64 * 730 * 86_400) / txs as i64,
                nanos: 0,
            }),
            amount: 20.0 + (k % 7) as f64,
            ..Default::default()
        })
        .collect();
    pb::BatchScoreRequest {
        items: (0..items)
            .map(|i| pb::ScoreRequest {
                customer_id: format!("h{i}"),
                input: Some(pb::score_request::Input::History(pb::History {
                    transactions: history.clone(),
                })),
                as_of: Some(prost_types::Timestamp {
                    seconds: end,
                    nanos: 0,
                }),
                ..Default::default()
            })
            .collect(),
        feature_names: vec![],
    }
}

/// Victim Score latencies (µs, sorted) at about `rate` a second for `secs`, and the codes of
/// the failures.
async fn victim(server: &TestServer, secs: u64, rate: u64) -> (Vec<u64>, Vec<Code>) {
    let mut client = server.scoring().await;
    let (mut lat, mut failed) = (Vec::new(), Vec::new());
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    while Instant::now() < end {
        tick.tick().await;
        let t = Instant::now();
        match client.score(features_request("victim", typical())).await {
            Ok(_) => lat.push(t.elapsed().as_micros() as u64),
            Err(e) => failed.push(e.code()),
        }
    }
    lat.sort_unstable();
    (lat, failed)
}

fn p99(lat: &[u64]) -> u64 {
    lat[(lat.len() * 99 / 100).min(lat.len() - 1)]
}

/// Two clients looping batches of 300 customers × 3,000 transactions (under the cost budget,
/// each about a tenth of a second of CPU) and one over it, beside a victim's Score at 200 a
/// second: every victim request succeeds; the hostile ones are answered, limited or refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_victim_is_served_beside_two_hostile_batch_clients() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    production_v001(&path).await;
    let server = TestServer::start(&path, |_| {}).await;
    until_serving(&server).await;
    let (alone, failed_alone) = victim(&server, 2, 200).await;
    assert!(failed_alone.is_empty());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hostile: Vec<_> = (0..2)
        .map(|_| {
            let (client, stop) = (futures_client(&server), stop.clone());
            tokio::spawn(async move {
                let mut c = client.await;
                let mut codes = Vec::new();
                let batch = heavy_batch(300, 3_000);
                for _ in 0..40 {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    codes.push(match c.batch_score(batch.clone()).await {
                        Ok(_) => Code::Ok,
                        Err(e) => e.code(),
                    });
                }
                codes
            })
        })
        .collect();
    // Over the budget: refused before any work, naming the field and the limit.
    let mut c = server.scoring().await;
    let err = c.batch_score(heavy_batch(400, 3_000)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("items: hold 1200000 transactions"),
        "{}",
        err.message()
    );

    let (attacked, failed) = victim(&server, 3, 200).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut hostile_codes = Vec::new();
    for h in hostile {
        hostile_codes.extend(h.await.unwrap());
    }
    server.stop().await;
    assert!(failed.is_empty(), "victim failures: {failed:?}");
    assert!(!hostile_codes.is_empty());
    assert!(
        hostile_codes
            .iter()
            .all(|c| matches!(c, Code::Ok | Code::ResourceExhausted)),
        "{hostile_codes:?}"
    );
    eprintln!(
        "victim Score p99: alone {} µs ({} requests), beside two hostile batch loops {} µs ({} requests); hostile batches answered {}",
        p99(&alone),
        alone.len(),
        p99(&attacked),
        attacked.len(),
        hostile_codes.iter().filter(|c| **c == Code::Ok).count()
    );
}

/// A client for `addr` that takes large messages.
async fn big_client(
    addr: std::net::SocketAddr,
) -> pb::scoring_client::ScoringClient<tonic::transport::Channel> {
    let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    pb::scoring_client::ScoringClient::new(ch)
        .max_encoding_message_size(256 << 20)
        .max_decoding_message_size(256 << 20)
}

/// [`big_client`] for the server, as a future a spawned task can own.
fn futures_client(
    server: &TestServer,
) -> impl std::future::Future<Output = pb::scoring_client::ScoringClient<tonic::transport::Channel>>
       + Send
       + 'static {
    big_client(server.addr)
}

/// A message already encoded, sent as it is: a client whose encoding costs nothing. (A debug
/// build encodes a 60 MB batch slower than its 200 ms deadline, and tonic's channel applies
/// the `grpc-timeout` header on the client side too, so the client gave up before the
/// server had the request.)
#[derive(Clone, Debug, Default)]
pub struct PreEncoded(pub bytes::Bytes);

impl prost::Message for PreEncoded {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// BatchScore with a pre-encoded request.
async fn batch_score_encoded(
    server: &TestServer,
    req: tonic::Request<PreEncoded>,
) -> Result<pb::BatchScoreResponse, tonic::Status> {
    call_encoded(server, "/loyalscore.v1.Scoring/BatchScore", req).await
}

/// Any unary method with a pre-encoded request (any bytes at all).
pub async fn call_encoded<R: prost::Message + Default + Send + 'static>(
    server: &TestServer,
    path: &'static str,
    req: tonic::Request<PreEncoded>,
) -> Result<R, tonic::Status> {
    let ch = server.channel().await;
    let mut grpc = tonic::client::Grpc::new(ch)
        .max_encoding_message_size(256 << 20)
        .max_decoding_message_size(256 << 20);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<PreEncoded, R>::default();
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(req, path, codec).await.map(|r| r.into_inner())
}

/// A batch whose deadline (200 ms) passes mid-work stops early and is counted
/// DEADLINE_EXCEEDED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_past_its_deadline_stops_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    production_v001(&path).await;
    let server = TestServer::start(&path, |c| c.max_request_transactions = 4_000_000).await;
    until_serving(&server).await;
    // 8,000 customers of 400 purchases: over a second of work. The deadline goes in the
    // header only, so the server (not the client's own timer) is the one that gives up.
    let encoded = prost::Message::encode_to_vec(&heavy_batch(8_000, 400));
    let mut req = tonic::Request::new(PreEncoded(encoded.into()));
    req.metadata_mut()
        .insert("grpc-timeout", "200m".parse().unwrap());
    let err = batch_score_encoded(&server, req).await.unwrap_err();
    // tonic's server answers an expired deadline with CANCELLED, "Timeout expired".
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    // The server counts it once it notices (a loaded machine may still be reading the body);
    // the work already handed over finishes, nothing after it starts.
    let mut m = String::new();
    for _ in 0..200 {
        m = server.metrics().await;
        if metric(&m, "loyalscore_requests_total", &["BatchScore"]) > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m2 = server.metrics().await;
    let scored = metric(&m2, "loyalscore_scored_items_total", &[]);
    assert!(
        scored < 8_000.0 * 0.7,
        "{scored} of 8,000 items scored after the deadline"
    );
    assert_eq!(
        metric(
            &m,
            "loyalscore_requests_total",
            &["BatchScore", "DEADLINE_EXCEEDED"]
        ),
        1.0,
        "{m}"
    );
    server.stop().await;
}

/// 5,000 connections that never send a byte: beyond the limit they are closed on arrival,
/// the idle ones time out, and health and Score still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_stop_health_or_score() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    production_v001(&path).await;
    let server = TestServer::start(&path, |c| {
        c.max_connections = Some(1_000);
        c.handshake_timeout_secs = 1;
    })
    .await;
    until_serving(&server).await;
    let mut idle = Vec::new();
    for _ in 0..5_000 {
        if let Ok(s) = tokio::net::TcpStream::connect(server.addr).await {
            idle.push(s);
        }
    }
    // Within a few handshake timeouts a new caller gets through.
    let mut answered = false;
    for _ in 0..50 {
        let ok = tokio::time::timeout(Duration::from_secs(1), async {
            let mut c = server.scoring().await;
            c.score(features_request("c", typical())).await.is_ok()
        })
        .await
        .unwrap_or(false);
        if ok {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answered,
        "a Score got through beside 5,000 idle connections"
    );
    assert_eq!(
        server.health("").await,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let m = server.metrics().await;
    assert!(
        metric(&m, "loyalscore_connections_refused_total", &[]) >= 3_000.0,
        "{m}"
    );
    drop(idle);
    server.stop().await;
}

/// 8 clients pinning 3 versions 25 times each: each version is loaded once, off the request
/// path, for everyone; with room for 2, the third distinct pin is refused clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_version_storm_loads_each_version_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let reg = production_v001(&path).await;
    publish(&reg, "v002").await;
    publish_other(&reg, "v003").await;
    publish(&reg, "v004").await;
    let server = TestServer::start(&path, |c| c.max_pinned_versions = 2).await;
    until_serving(&server).await;
    let tasks: Vec<_> = (0..8)
        .map(|k| {
            let client = futures_client(&server);
            tokio::spawn(async move {
                let mut c = client.await;
                let mut codes = Vec::new();
                for i in 0..25 {
                    let mut r = features_request("c", typical());
                    r.version = ["v002", "v003", "v004"][(k + i) % 3].into();
                    codes.push((
                        r.version.clone(),
                        match c.score(r).await {
                            Ok(_) => Code::Ok,
                            Err(e) => e.code(),
                        },
                    ));
                }
                codes
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.extend(t.await.unwrap());
    }
    let m = server.metrics().await;
    server.stop().await;
    let ok_versions: std::collections::BTreeSet<&str> = codes
        .iter()
        .filter(|(_, c)| *c == Code::Ok)
        .map(|(v, _)| v.as_str())
        .collect();
    assert_eq!(ok_versions.len(), 2, "two pins held: {ok_versions:?}");
    assert!(codes
        .iter()
        .all(|(_, c)| matches!(c, Code::Ok | Code::ResourceExhausted)));
    assert!(codes.iter().any(|(_, c)| *c == Code::ResourceExhausted));
    assert_eq!(
        metric(&m, "loyalscore_pinned_loads_total", &["ok"]),
        2.0,
        "{m}"
    );
}

/// With room for 2 requests in progress, 16 concurrent heavy batches: the excess is shed at
/// once with RESOURCE_EXHAUSTED, never queued, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_past_the_limit_is_shed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    production_v001(&path).await;
    let server = TestServer::start(&path, |c| c.max_concurrent_requests = 2).await;
    until_serving(&server).await;
    let batch = heavy_batch(200, 2_000);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (client, batch) = (futures_client(&server), batch.clone());
            tokio::spawn(async move {
                match client.await.batch_score(batch).await {
                    Ok(_) => Code::Ok,
                    Err(e) => e.code(),
                }
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    let m = server.metrics().await;
    server.stop().await;
    let shed = codes
        .iter()
        .filter(|c| **c == Code::ResourceExhausted)
        .count();
    assert!(
        shed > 0
            && codes
                .iter()
                .all(|c| matches!(c, Code::Ok | Code::ResourceExhausted)),
        "{codes:?}"
    );
    assert_eq!(
        metric(
            &m,
            "loyalscore_requests_total",
            &["BatchScore", "RESOURCE_EXHAUSTED"]
        ),
        shed as f64
    );
}

//! Scoring by customer id from the live state, on the embedded store and on a real Redis:
//! purchases recorded out of order and twice give the scores of the sorted history, two
//! servers on one Redis lose no purchase, a killed server keeps what it acknowledged, and an
//! erasure leaves nothing and names no one.

use std::process::{Command, Stdio};

use loyalscore::features::DAY;
use loyalscore::proto::v1 as pb;
use loyalscore::proto::v1::customer_state_client::CustomerStateClient;
use loyalscore::state::event_key;
use loyalscore::trainer::{load_transactions, LoadOptions, TransactionLog};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tonic::Code;

use crate::redis::Redis;
use crate::server::{admin, production_v001, until_serving, wait_for, TestServer};
use crate::support::{sample, Killed};

pub fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// The log's customers and their events before `as_of`, each with an id.
pub struct Feed {
    pub log: TransactionLog,
    /// (customer index, event id, transaction), in the log's order.
    pub events: Vec<(usize, String, pb::Transaction)>,
    pub as_of: i64,
}

pub fn feed(dir: &std::path::Path, customers: usize) -> Feed {
    let (csv, _) = sample(dir, customers, 700, 41);
    let log = load_transactions(
        std::fs::File::open(&csv).unwrap(),
        "state",
        &LoadOptions::default(),
        |_| {},
    )
    .unwrap();
    let as_of = (log.quality.last_ts.div_euclid(DAY) + 1) * DAY;
    let mut events = Vec::new();
    for c in 0..log.n_customers() {
        for (k, r) in log.history(c, as_of).iter().enumerate() {
            let tx = loyalscore::cli::score_log::transaction(&log, r);
            events.push((c, format!("{}-{k}", log.ids[c]), tx));
        }
    }
    Feed { log, events, as_of }
}

impl Feed {
    pub fn event(&self, i: usize) -> pb::PurchaseEvent {
        let (c, id, tx) = &self.events[i];
        pb::PurchaseEvent {
            customer_id: self.log.ids[*c].clone(),
            event_id: id.clone(),
            transaction: Some(tx.clone()),
        }
    }

    /// Every event once, shuffled by up to a day (inside the lateness window), and one in
    /// twenty sent a second time a little later.
    pub fn arrival(&self, seed: u64) -> Vec<pb::PurchaseEvent> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut keyed: Vec<(i64, usize)> = (0..self.events.len())
            .map(|i| {
                let t = self.events[i].2.time.as_ref().unwrap().seconds;
                (t + rng.random_range(0..DAY), i)
            })
            .collect();
        let mut replays = Vec::new();
        for &(t, i) in &keyed {
            if rng.random_bool(0.05) {
                replays.push((t + rng.random_range(0..DAY), i));
            }
        }
        keyed.extend(replays);
        keyed.sort();
        keyed.into_iter().map(|(_, i)| self.event(i)).collect()
    }

    /// The reference: each customer's whole history in one request, sorted as the state
    /// orders events (time, then event key).
    fn history_requests(&self) -> Vec<pb::ScoreRequest> {
        let mut by_customer: Vec<Vec<(i64, u64, pb::Transaction)>> =
            vec![Vec::new(); self.log.n_customers()];
        for (c, id, tx) in &self.events {
            by_customer[*c].push((tx.time.as_ref().unwrap().seconds, event_key(id), tx.clone()));
        }
        by_customer
            .into_iter()
            .enumerate()
            .map(|(c, mut txs)| {
                txs.sort_by_key(|(t, k, _)| (*t, *k));
                pb::ScoreRequest {
                    customer_id: self.log.ids[c].clone(),
                    input: Some(pb::score_request::Input::History(pb::History {
                        transactions: txs.into_iter().map(|(_, _, tx)| tx).collect(),
                    })),
                    as_of: ts(self.as_of),
                    explain: true,
                    ..Default::default()
                }
            })
            .collect()
    }

    fn by_id_requests(&self) -> Vec<pb::ScoreRequest> {
        (0..self.log.n_customers())
            .map(|c| pb::ScoreRequest {
                customer_id: self.log.ids[c].clone(),
                as_of: ts(self.as_of),
                explain: true,
                ..Default::default()
            })
            .collect()
    }
}

async fn record(
    addr: std::net::SocketAddr,
    events: Vec<pb::PurchaseEvent>,
) -> pb::RecordPurchasesResponse {
    let mut client = CustomerStateClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut total = pb::RecordPurchasesResponse::default();
    for chunk in events.chunks(500) {
        let r = client
            .record_purchases(pb::RecordPurchasesRequest {
                events: chunk.to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        total.applied += r.applied;
        total.duplicate += r.duplicate;
        total.late += r.late;
        total.rejected += r.rejected;
    }
    total
}

async fn batch(addr: std::net::SocketAddr, items: Vec<pb::ScoreRequest>) -> Vec<pb::ScoreResponse> {
    loyalscore::proto::v1::scoring_client::ScoringClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .batch_score(pb::BatchScoreRequest {
            items,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .results
        .into_iter()
        .map(|r| match r.result {
            Some(pb::batch_item::Result::Score(s)) => s,
            other => panic!("{other:?}"),
        })
        .collect()
}

/// Scores by id equal, bit for bit, the scores of each customer's sorted history.
pub async fn assert_by_id_equals_history(server: &TestServer, f: &Feed) {
    assert_by_id_equals_history_at(server.addr, f).await
}

/// [`assert_by_id_equals_history`] against the server at `addr`.
pub async fn assert_by_id_equals_history_at(addr: std::net::SocketAddr, f: &Feed) {
    let by_id = batch(addr, f.by_id_requests()).await;
    let reference = batch(addr, f.history_requests()).await;
    assert_eq!(by_id.len(), reference.len());
    for (a, b) in by_id.iter().zip(&reference) {
        let (fa, fb) = (a.features.as_ref().unwrap(), b.features.as_ref().unwrap());
        for (j, (x, y)) in fa.values.iter().zip(&fb.values).enumerate() {
            assert_eq!(
                x.to_bits(),
                y.to_bits(),
                "{} feature {}",
                a.customer_id,
                fa.names[j]
            );
        }
        assert_eq!(a.churn_probability.to_bits(), b.churn_probability.to_bits());
        assert_eq!(a.clv.to_bits(), b.clv.to_bits());
        assert_eq!((&a.segment, &a.contact_from), (&b.segment, &b.contact_from));
    }
}

async fn equivalence(state: String) {
    let dir = tempfile::tempdir().unwrap();
    let f = feed(dir.path(), 1000);
    let reg = dir.path().join("registry");
    production_v001(reg.to_str().unwrap()).await;
    let server = TestServer::start(reg.to_str().unwrap(), |c| c.state.state = state).await;
    until_serving(&server).await;
    let arrival = f.arrival(1);
    let r = record(server.addr, arrival.clone()).await;
    assert_eq!(r.applied as usize, f.events.len(), "{r:?}");
    assert_eq!(
        (r.duplicate + r.late) as usize,
        arrival.len() - f.events.len()
    );
    assert_by_id_equals_history(&server, &f).await;
    // A replay of the whole feed changes nothing.
    let again = record(server.addr, arrival).await;
    assert_eq!(again.applied, 0, "{again:?}");
    assert_by_id_equals_history(&server, &f).await;
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("loyalscore_state_events_total{outcome=\"applied\"}"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scores_by_id_equal_the_sorted_history_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    equivalence(
        dir.path()
            .join("state/customers.redb")
            .to_str()
            .unwrap()
            .into(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scores_by_id_equal_the_sorted_history_on_redis() {
    let redis = Redis::start();
    equivalence(redis.url()).await;
}

/// Two servers on one Redis, each sent half of every customer's events at the same time:
/// every purchase is in the state. (The two halves run through two years of purchases at
/// their own speeds, days apart in event time, so the lateness window is set wider than the
/// data: what is tested here is concurrent writers, not late events.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_redis_lose_no_purchase() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let f = feed(dir.path(), 300);
    let reg = dir.path().join("registry");
    production_v001(reg.to_str().unwrap()).await;
    let start = || {
        TestServer::start(reg.to_str().unwrap(), |c| {
            c.state.state = redis.url();
            c.state.state_lateness_secs = 3650 * DAY;
        })
    };
    let (a, b) = (start().await, start().await);
    until_serving(&a).await;
    until_serving(&b).await;
    let arrival = f.arrival(2);
    let (even, odd): (Vec<_>, Vec<_>) = arrival
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let strip =
        |v: Vec<(usize, pb::PurchaseEvent)>| v.into_iter().map(|(_, e)| e).collect::<Vec<_>>();
    let (ra, rb) = tokio::join!(record(a.addr, strip(even)), record(b.addr, strip(odd)));
    assert_eq!(
        (ra.applied + rb.applied) as usize,
        f.events.len(),
        "{ra:?} {rb:?}"
    );
    assert_by_id_equals_history(&a, &f).await;
    a.stop().await;
    b.stop().await;
}

/// An erased customer is NOT_FOUND afterwards, and the erasure record names no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forget_erases_the_customer_and_records_no_id() {
    let dir = tempfile::tempdir().unwrap();
    let f = feed(dir.path(), 50);
    let reg = dir.path().join("registry");
    production_v001(reg.to_str().unwrap()).await;
    let state = dir.path().join("state.redb");
    let server = TestServer::start(reg.to_str().unwrap(), |c| {
        c.state.state = state.to_str().unwrap().into()
    })
    .await;
    until_serving(&server).await;
    record(server.addr, f.arrival(3)).await;
    let id = f.log.ids[7].clone();
    let mut client = CustomerStateClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let forget = |reason: &str| pb::ForgetRequest {
        customer_id: id.clone(),
        reason: reason.into(),
        actor: "dpo".into(),
    };
    let e = client.forget(forget("erasure request")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "without the admin token");
    let e = client.forget(admin(forget(" "))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let r = client
        .forget(admin(forget("erasure request")))
        .await
        .unwrap()
        .into_inner();
    assert!(r.found && r.erasure_hash.len() == 64 && !r.erasure_hash.contains(&id));
    let mut by_id = f.by_id_requests()[7].clone();
    by_id.explain = false;
    let e = server.scoring().await.score(by_id).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    server.stop().await;
    // The store on disk: the erasure is listed by its hash; no byte of the file names the id.
    let out = Command::new(env!("CARGO_BIN_EXE_loyalscore"))
        .args([
            "--json",
            "state",
            "erasures",
            "--state",
            state.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let erasures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(erasures[0]["customer"], r.erasure_hash.as_str());
    assert_eq!(erasures[0]["reason"], "erasure request");
    let bytes = std::fs::read(&state).unwrap();
    assert!(
        !bytes.windows(id.len()).any(|w| w == id.as_bytes()),
        "the id is still in the file"
    );
}

fn serve(registry: &str, state: &str, port: u16) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_loyalscore-serve"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--registry",
                registry,
                "--state",
                state,
            ])
            .args(["--state-lateness-secs", &(3650 * DAY).to_string()])
            .args(["--metrics-listen", "off", "--log", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn until_up(addr: std::net::SocketAddr) {
    wait_for(async || {
        CustomerStateClient::connect(format!("http://{addr}"))
            .await
            .is_ok()
    })
    .await;
}

/// The server killed (SIGKILL) while events stream in, then restarted on the same file:
/// every event it acknowledged is there (sent again, each is a duplicate).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_keeps_every_event_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let f = feed(dir.path(), 300);
    let reg = dir.path().join("registry");
    production_v001(reg.to_str().unwrap()).await;
    let state = dir.path().join("state.redb");
    let port = crate::support::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut events: Vec<pb::PurchaseEvent> = (0..f.events.len()).map(|i| f.event(i)).collect();
    events.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(5));
    let mut server = serve(reg.to_str().unwrap(), state.to_str().unwrap(), port);
    until_up(addr).await;
    let mut client = CustomerStateClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let chunks: Vec<Vec<pb::PurchaseEvent>> = events.chunks(200).map(|c| c.to_vec()).collect();
    let mut acknowledged = Vec::new();
    for (k, chunk) in chunks.iter().enumerate() {
        if k == chunks.len() / 2 {
            // Kill while the next batch is on its way.
            let mut c2 = client.clone();
            let inflight = chunk.clone();
            let send = tokio::spawn(async move {
                c2.record_purchases(pb::RecordPurchasesRequest { events: inflight })
                    .await
            });
            server.0.kill().unwrap();
            let _ = server.0.wait();
            let _ = send.await;
            break;
        }
        client
            .record_purchases(pb::RecordPurchasesRequest {
                events: chunk.clone(),
            })
            .await
            .unwrap();
        acknowledged.extend(chunk.iter().cloned());
    }
    assert!(acknowledged.len() >= 1000);
    drop(server);
    let _server = serve(reg.to_str().unwrap(), state.to_str().unwrap(), port);
    until_up(addr).await;
    let r = record(addr, acknowledged.clone()).await;
    assert_eq!(
        (r.applied, r.duplicate as usize),
        (0, acknowledged.len()),
        "{r:?}"
    );
}

/// Two replicas judging one customer at once on one Redis: exactly one of them replaces the
/// mark (and so publishes the change); an erasure takes the mark with the state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_two_replicas_replaces_a_segment_mark_on_redis() {
    use loyalscore::state::redis::RedisStore;
    use loyalscore::state::CustomerStore;
    let redis = Redis::start();
    let (a, b) = (
        RedisStore::connect(&redis.url()).await.unwrap(),
        RedisStore::connect(&redis.url()).await.unwrap(),
    );
    let mut previous = None;
    for round in 0..40 {
        let to = ["steady", "lapsing"][round % 2];
        let mark = [("c1", to)];
        let (x, y) = tokio::join!(a.set_marks(&mark), b.set_marks(&mark));
        let replaced: Vec<Option<String>> = [x.unwrap(), y.unwrap()]
            .into_iter()
            .filter_map(|r| r[0].clone())
            .collect();
        assert_eq!(replaced, vec![previous.clone()], "round {round}");
        previous = Some(to.to_string());
    }
    a.forget("c1", "test", "erasure request").await.unwrap();
    assert_eq!(
        b.set_marks(&[("c1", "steady")]).await.unwrap(),
        vec![Some(None)]
    );
}

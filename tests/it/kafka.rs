//! Purchases from a real Kafka-compatible broker (tansu) into the live state, and segment
//! changes out to it: the topic's purchases, out of order and some twice, give the scores of
//! the sorted history; a server killed while consuming applies every event exactly once
//! after its restart; customers who drift get a lapsing or dormant change, and a replay of
//! the topic publishes no change twice.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loyalscore::features::DAY;
use loyalscore::proto::v1 as pb;
use loyalscore::stream::{PurchaseMessage, SegmentChange};

use crate::broker::Broker;
use crate::server::{production_v001, until_serving, TestServer};
use crate::state::{assert_by_id_equals_history, feed};
use crate::support::{free_port, Killed};

const PURCHASES: &str = "purchases";
const CHANGES: &str = "segment-changes";
/// The server's producer writes a record batch per message: see [`Broker::producer`] for
/// what tansu does with larger batches.
const TANSU_PRODUCER: &str = "batch.num.messages=1";

/// A purchase message as a producer would write it.
fn message(e: &pb::PurchaseEvent) -> (String, Vec<u8>) {
    let tx = e.transaction.as_ref().unwrap();
    let m = PurchaseMessage {
        event_id: e.event_id.clone(),
        customer_id: e.customer_id.clone(),
        timestamp: loyalscore::time::fmt_ts(tx.time.as_ref().unwrap().seconds),
        amount: tx.amount,
        points_earned: tx.points_earned,
        points_redeemed: tx.points_redeemed,
        channel: Some(tx.channel.clone()).filter(|c| !c.is_empty()),
        quantity: Some(1),
    };
    (e.customer_id.clone(), serde_json::to_vec(&m).unwrap())
}

/// The value of one sample in Prometheus text (`name{labels}`), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn consumed(text: &str) -> f64 {
    ["applied", "duplicate", "late", "rejected", "malformed"]
        .iter()
        .map(|o| {
            sample(
                text,
                &format!("loyalscore_kafka_messages_total{{outcome=\"{o}\"}}"),
            )
        })
        .sum()
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let _ = s
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

/// Polls the metrics until `done` holds (at most `secs`).
async fn until(addr: std::net::SocketAddr, secs: u64, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let text = scrape(addr).await;
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "not reached in {secs} s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn topics(broker: &Broker) {
    broker.create_topic(PURCHASES, 3);
    broker.create_topic(CHANGES, 3);
}

fn changes(broker: &Broker) -> Vec<SegmentChange> {
    broker
        .read_all(CHANGES)
        .into_iter()
        .map(|(k, v)| {
            let c: SegmentChange = serde_json::from_slice(&v).unwrap();
            assert_eq!(k, c.customer_id, "keyed by customer");
            c
        })
        .collect()
}

/// Each customer's changes, in order, chain (`from` is the previous `to`) and never repeat
/// the segment they leave: no change was published twice.
fn assert_chained(all: &[SegmentChange]) -> HashMap<&str, Vec<&SegmentChange>> {
    let mut by: HashMap<&str, Vec<&SegmentChange>> = HashMap::new();
    for c in all {
        by.entry(c.customer_id.as_str()).or_default().push(c);
    }
    for (id, cs) in &by {
        assert_eq!(cs[0].from, None, "{id}: {cs:?}");
        for w in cs.windows(2) {
            assert_eq!(w[1].from.as_deref(), Some(w[0].to.as_str()), "{id}: {cs:?}");
            assert_ne!(w[1].to, w[0].to, "{id}: {cs:?}");
        }
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purchases_from_the_topic_give_the_scores_of_the_sorted_history() {
    let broker = Broker::start();
    topics(&broker);
    let dir = tempfile::tempdir().unwrap();
    let f = feed(dir.path(), 1000);
    let reg = dir.path().join("registry");
    production_v001(reg.to_str().unwrap()).await;
    let arrival = f.arrival(1);
    let mut messages: Vec<(String, Vec<u8>)> = arrival.iter().map(message).collect();
    // Three broken messages among them: skipped, counted, and the consumer goes on.
    for (at, bad) in [
        (10, b"not json".to_vec()),
        (
            500,
            br#"{"event_id":"x","customer_id":"C1","timestamp":"2023-01-01"}"#.to_vec(),
        ),
        (
            900,
            br#"{"event_id":"y","customer_id":"C1","timestamp":"2023-01-01","amount":"12"}"#
                .to_vec(),
        ),
    ] {
        messages.insert(at, ("C1".into(), bad));
    }
    broker.produce(PURCHASES, &messages).await;
    let state = dir.path().join("state.redb");
    let server = TestServer::start(reg.to_str().unwrap(), |c| {
        c.state.state = state.to_str().unwrap().into();
        c.kafka.client.kafka_brokers = Some(broker.brokers());
        c.kafka.client.kafka_option = vec![TANSU_PRODUCER.into()];
    })
    .await;
    until_serving(&server).await;
    let total = messages.len() as f64;
    let text = until(server.metrics_addr, 120, |t| consumed(t) >= total).await;
    let applied = sample(
        &text,
        "loyalscore_kafka_messages_total{outcome=\"applied\"}",
    );
    let malformed = sample(
        &text,
        "loyalscore_kafka_messages_total{outcome=\"malformed\"}",
    );
    assert_eq!(
        (applied as usize, malformed),
        (f.events.len(), 3.0),
        "{text}"
    );
    assert_by_id_equals_history(&server, &f).await;
    // Every customer's first judgement went out, once each.
    until(server.metrics_addr, 30, |t| {
        sample(t, "loyalscore_segment_changes_total{result=\"published\"}") >= 1000.0
    })
    .await;
    let published = changes(&broker);
    let by = assert_chained(&published);
    assert_eq!(by.len(), f.log.n_customers());
    // The lag, -1 until librdkafka's statistics count it, reads 0 once all is committed.
    until(server.metrics_addr, 30, |t| {
        t.lines().any(|l| l == "loyalscore_kafka_consumer_lag 0")
    })
    .await;
    server.stop().await;
}

/// `loyalscore-serve` as a process on `grpc`, consuming the topic into `state` in small
/// batches.
fn serve(registry: &str, state: &str, brokers: &str, (grpc, metrics): (u16, u16)) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_loyalscore-serve"))
            .args(["--listen", &format!("127.0.0.1:{grpc}")])
            .args(["--registry", registry, "--state", state])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .args(["--kafka-brokers", brokers, "--kafka-batch", "50"])
            .args(["--kafka-segment-topic", "off", "--log", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

const PARTITIONS: i32 = 3;

/// A last message on each partition, for a customer of its own: once all are in the state,
/// everything before them on their partitions is too (a partition is applied in order).
async fn sentinels(broker: &Broker) {
    for p in 0..PARTITIONS {
        let e = pb::PurchaseEvent {
            customer_id: format!("sentinel-{p}"),
            event_id: format!("s{p}"),
            transaction: Some(pb::Transaction {
                time: crate::state::ts(loyalscore::time::parse_timestamp("2023-06-01").unwrap()),
                amount: 1.0,
                ..Default::default()
            }),
        };
        let (k, v) = message(&e);
        broker.produce_to(PURCHASES, p, &k, &v).await;
    }
}

/// Waits until every sentinel scores by id on the server at `addr`.
async fn until_sentinels(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(180);
    'wait: loop {
        assert!(Instant::now() < deadline, "the sentinels never arrived");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(mut client) =
            loyalscore::proto::v1::scoring_client::ScoringClient::connect(format!("http://{addr}"))
                .await
        else {
            continue;
        };
        for p in 0..PARTITIONS {
            let r = client
                .score(pb::ScoreRequest {
                    customer_id: format!("sentinel-{p}"),
                    ..Default::default()
                })
                .await;
            if r.is_err() {
                continue 'wait;
            }
        }
        return;
    }
}

/// The server killed (SIGKILL) mid-topic, then restarted on the same state: every event is
/// applied exactly once (the state gives the sorted history's scores), as the restarted
/// server answers and after it too is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_while_consuming_applies_every_event_once() {
    let broker = Broker::start();
    topics(&broker);
    let dir = tempfile::tempdir().unwrap();
    let f = feed(dir.path(), 400);
    let reg = dir.path().join("registry");
    production_v001(reg.to_str().unwrap()).await;
    let messages: Vec<(String, Vec<u8>)> = f.arrival(3).iter().map(message).collect();
    broker.produce(PURCHASES, &messages).await;
    sentinels(&broker).await;
    let state = dir.path().join("state.redb");
    let (reg_s, state_s) = (reg.to_str().unwrap(), state.to_str().unwrap());
    let ports = (free_port(), free_port());
    let grpc: std::net::SocketAddr = format!("127.0.0.1:{}", ports.0).parse().unwrap();
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", ports.1).parse().unwrap();
    let mut first = serve(reg_s, state_s, &broker.brokers(), ports);
    let third = messages.len() as f64 / 3.0;
    let before = until(metrics, 120, |t| consumed(t) >= third).await;
    first.0.kill().unwrap();
    let _ = first.0.wait();
    assert!(
        consumed(&before) < messages.len() as f64,
        "killed after the end"
    );
    let second = serve(reg_s, state_s, &broker.brokers(), ports);
    until_sentinels(grpc).await;
    crate::state::assert_by_id_equals_history_at(grpc, &f).await;
    drop(second);
    let server = TestServer::start(reg_s, |c| c.state.state = state_s.into()).await;
    until_serving(&server).await;
    assert_by_id_equals_history(&server, &f).await;
    server.stop().await;
}

/// Weekly buyers until yesterday, and weekly buyers who stopped five months ago.
fn drifters(now: i64) -> (Vec<pb::PurchaseEvent>, Vec<String>, Vec<String>) {
    let (mut events, mut steady, mut drifting) = (Vec::new(), Vec::new(), Vec::new());
    for c in 0..60 {
        let id = format!("K{c:03}");
        let last = if c % 2 == 0 {
            now - DAY
        } else {
            now - 150 * DAY
        };
        for k in 0..40 {
            let t = last - k * 7 * DAY - (c * 3_600);
            events.push(pb::PurchaseEvent {
                customer_id: id.clone(),
                event_id: format!("{id}-{k}"),
                transaction: Some(pb::Transaction {
                    time: crate::state::ts(t),
                    // Small baskets: not valuable, so a drift reads lapsing or dormant, not a rescue.
                    amount: 1.0 + (k % 3) as f64,
                    ..Default::default()
                }),
            });
        }
        if c % 2 == 0 {
            steady.push(id);
        } else {
            drifting.push(id);
        }
    }
    (events, steady, drifting)
}

/// Purchases judge a customer as of their latest one; the re-score judges them today. The
/// drifters' re-score moves them to lapsing or dormant; a replay of the topic changes no
/// state and publishes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drifters_get_a_lapsing_change_and_a_replay_publishes_none() {
    let broker = Broker::start();
    topics(&broker);
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("registry");
    production_v001(reg.to_str().unwrap()).await;
    let now = chrono::Utc::now().timestamp();
    let (events, steady, drifting) = drifters(now);
    // Oldest first, as a shop's log would send them.
    let mut sorted = events.clone();
    sorted.sort_by_key(|e| {
        e.transaction
            .as_ref()
            .unwrap()
            .time
            .as_ref()
            .unwrap()
            .seconds
    });
    let messages: Vec<(String, Vec<u8>)> = sorted.iter().map(message).collect();
    broker.produce(PURCHASES, &messages).await;
    let state = dir.path().join("state.redb");
    let server = TestServer::start(reg.to_str().unwrap(), |c| {
        c.state.state = state.to_str().unwrap().into();
        c.kafka.client.kafka_brokers = Some(broker.brokers());
        c.kafka.kafka_rescore_secs = 2;
        c.kafka.client.kafka_option = vec![TANSU_PRODUCER.into()];
    })
    .await;
    until_serving(&server).await;
    let n = messages.len() as f64;
    until(server.metrics_addr, 60, |t| consumed(t) >= n).await;
    // Three re-scores of the 60 after the last purchase was applied: the first may have read
    // the change topic before the last batch's changes were on it.
    let r0 = sample(&server.metrics().await, "loyalscore_segment_rescored_total");
    until(server.metrics_addr, 30, |t| {
        sample(t, "loyalscore_segment_rescored_total") >= r0 + 180.0
    })
    .await;
    let first = changes(&broker);
    let by = assert_chained(&first);
    let text = server.metrics().await;
    for id in &drifting {
        let last = by[id.as_str()].last().unwrap();
        assert!(
            ["lapsing", "dormant"].contains(&last.to.as_str()),
            "{id}: {:?}\n{} changes on the topic\n{text}",
            by[id.as_str()],
            first.len()
        );
        assert!(
            by[id.as_str()].len() >= 2,
            "{id}: judged at the purchase, then drifted"
        );
        assert!(!last.reasons.is_empty() && !last.version.is_empty());
    }
    for id in &steady {
        let last = by[id.as_str()].last().unwrap();
        assert!(
            !["lapsing", "dormant"].contains(&last.to.as_str()),
            "{id}: {last:?}"
        );
    }
    // The whole topic again: every message a duplicate, no change published.
    broker.produce(PURCHASES, &messages).await;
    until(server.metrics_addr, 60, |t| consumed(t) >= 2.0 * n).await;
    let r1 = sample(&server.metrics().await, "loyalscore_segment_rescored_total");
    until(server.metrics_addr, 30, |t| {
        sample(t, "loyalscore_segment_rescored_total") >= r1 + 180.0
    })
    .await;
    let text = server.metrics().await;
    assert_eq!(
        sample(
            &text,
            "loyalscore_kafka_messages_total{outcome=\"duplicate\"}"
        ) + sample(&text, "loyalscore_kafka_messages_total{outcome=\"late\"}"),
        n,
        "{text}"
    );
    assert_eq!(
        changes(&broker).len(),
        first.len(),
        "a replay published changes"
    );
    server.stop().await;
}

/// A Kafka setting the client refuses, or Kafka without the customer state, stops the
/// server at start with the reason (no broker needed: nothing connects before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_kafka_setting_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("registry");
    production_v001(reg.to_str().unwrap()).await;
    let state = dir.path().join("state.redb");
    for (extra, needle) in [
        (
            vec![
                "--state",
                state.to_str().unwrap(),
                "--kafka-option",
                "no.such.setting=1",
            ],
            "no.such.setting",
        ),
        (vec!["--state", "off"], "needs the customer state"),
        (vec!["--kafka-option", "novalue"], "is not KEY=VALUE"),
    ] {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_loyalscore-serve"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
            .args(["--registry", reg.to_str().unwrap()])
            .args(["--kafka-brokers", "127.0.0.1:1"])
            .args(&extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // A server that logs the problem and serves on would never exit: bounded.
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{extra:?}: the server started and ran on"))
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} started");
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
}

//! Purchases from Kafka into the live state: events per second from the topic into the
//! embedded and the Redis store, and the delay from producing a purchase to a score by id
//! that includes it (p50, p99). A real tansu broker, a real Redis, the real server.
//!
//! `cargo bench --bench stream` (needs LOYALSCORE_TANSU and redis-server, as
//! `scripts/test.sh` installs them). Under `cargo test` it runs once, small, as a smoke test.

#[path = "../tests/it/broker.rs"]
#[allow(dead_code)] // The tests read topics back; the bench only produces.
mod broker;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loyalscore::features::DAY;
use loyalscore::flags::{LogArgs, RegistryArgs};
use loyalscore::proto::v1 as pb;
use loyalscore::proto::v1::scoring_client::ScoringClient;
use loyalscore::registry::{Expect, Move, Registry};
use loyalscore::server::{serve, Config};
use loyalscore::stream::PurchaseMessage;
use loyalscore::trainer::generate::{generate, GenerateOptions};
use loyalscore::trainer::{load_transactions, train, FitOptions, LoadOptions, RunInfo, Silent};

use broker::Broker;

struct Sizes {
    events: usize,
    probes: usize,
}

/// A small trained model as the registry's `production`.
async fn registry(dir: &std::path::Path) -> String {
    let opts = GenerateOptions {
        customers: 1_500,
        seed: 5,
        start: 1_672_531_200,
        days: 700,
    };
    let mut buf = Vec::new();
    generate(&opts, &mut buf, &|_| {}).unwrap();
    let log = load_transactions(&buf[..], "bench", &LoadOptions::default(), |_| {}).unwrap();
    let run = RunInfo {
        args: vec![],
        created_at: chrono::Utc::now(),
    };
    let fit = FitOptions {
        force: true,
        ..FitOptions::default()
    };
    let trained = train(&log, &fit, &run, &Silent).unwrap();
    let (manifest, files) = trained.into_artifact().unwrap();
    let path = dir.join("registry");
    let reg = Registry::open(path.to_str().unwrap()).unwrap();
    reg.publish(&manifest, &files).await.unwrap();
    let who = Move {
        actor: "bench".into(),
        reason: "bench".into(),
    };
    reg.set_alias("production", &manifest.version, &Expect::Absent, &who)
        .await
        .unwrap();
    path.to_str().unwrap().to_string()
}

fn message(customer: &str, event: &str, ts: i64, amount: f64) -> (String, Vec<u8>) {
    let m = PurchaseMessage {
        event_id: event.into(),
        customer_id: customer.into(),
        timestamp: loyalscore::time::fmt_ts(ts),
        amount,
        points_earned: 0.0,
        points_redeemed: 0.0,
        channel: None,
        quantity: None,
    };
    (customer.to_string(), serde_json::to_vec(&m).unwrap())
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn consumed(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("loyalscore_kafka_messages_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Server {
    addr: std::net::SocketAddr,
    metrics: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(
    registry: &str,
    state: &str,
    brokers: &str,
    topic: &str,
    options: &[&str],
) -> Server {
    let mut c = Config::defaults().unwrap();
    c.registry = RegistryArgs::new(registry);
    c.log = LogArgs::new("error");
    c.state.state = state.into();
    c.kafka.client.kafka_brokers = Some(brokers.into());
    c.kafka.kafka_purchase_topic = topic.into();
    c.kafka.kafka_group = format!("bench-{topic}");
    c.kafka.kafka_segment_topic = "off".into();
    c.kafka.client.kafka_option = options.iter().map(|o| o.to_string()).collect();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, maddr) = (grpc.local_addr().unwrap(), metrics.local_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        serve(c, grpc, Some(metrics), async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Server {
        addr,
        metrics: maddr,
        stop,
        task,
    }
}

async fn until_consumed(s: &Server, n: f64) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if consumed(&scrape(s.metrics).await) >= n {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "not consumed in 10 min");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Events per second from the topic into `state`: the messages produced while the consumer
/// is idle (a backlog), timed from the first one applied to the last.
async fn throughput(b: &Broker, registry: &str, state: &str, topic: &str, n: usize) -> f64 {
    b.create_topic(topic, 3);
    let now = chrono::Utc::now().timestamp();
    let messages: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let c = format!("C{}", i % (n / 20).max(1));
            message(
                &c,
                &format!("e{i}"),
                now - 400 * DAY + (i as i64) * 60,
                20.0,
            )
        })
        .collect();
    b.produce(topic, &messages).await;
    let s = start(registry, state, &b.brokers(), topic, &[]).await;
    // From the first message applied: joining the group is not the consumer's speed.
    let t0 = until_consumed(&s, 1.0).await;
    let first = consumed(&scrape(s.metrics).await);
    let done = until_consumed(&s, n as f64).await;
    let rate = (n as f64 - first) / (done - t0).as_secs_f64();
    let _ = s.stop.send(());
    let _ = s.task.await;
    rate
}

/// Produce one purchase, then score the customer by id until the score includes it.
async fn delays(
    b: &Broker,
    (registry, state): (&str, &str),
    topic: &str,
    options: &[&str],
    probes: usize,
) -> Vec<Duration> {
    b.create_topic(topic, 3);
    let s = start(registry, state, &b.brokers(), topic, options).await;
    let now = chrono::Utc::now().timestamp();
    b.produce(topic, &[message("P", "p0", now - 10 * DAY, 1.0)])
        .await;
    until_consumed(&s, 1.0).await;
    let mut client = ScoringClient::connect(format!("http://{}", s.addr))
        .await
        .unwrap();
    let producer = b.producer();
    let mut out = Vec::with_capacity(probes);
    let mut spend = 1.0;
    for k in 1..=probes {
        let (key, payload) = message("P", &format!("p{k}"), now - 10 * DAY + k as i64, 1.0);
        spend += 1.0;
        let t0 = Instant::now();
        producer
            .send(
                rdkafka::producer::FutureRecord::to(topic)
                    .key(&key)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        loop {
            let r = client
                .score(pb::ScoreRequest {
                    customer_id: "P".into(),
                    explain: true,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let f = r.features.unwrap();
            let at = f.names.iter().position(|n| n == "spend_total").unwrap();
            if f.values[at] >= spend {
                out.push(t0.elapsed());
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "probe {k} not seen");
        }
    }
    let _ = s.stop.send(());
    let _ = s.task.await;
    out
}

fn pct(d: &mut [Duration], q: f64) -> f64 {
    d.sort();
    let i = ((d.len() as f64 - 1.0) * q).round() as usize;
    d[i].as_secs_f64() * 1e3
}

struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis() -> Redis {
    let bin = std::env::var("LOYALSCORE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    Redis(child, port)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full {
        Sizes {
            events: 100_000,
            probes: 200,
        }
    } else {
        Sizes {
            events: 2_000,
            probes: 5,
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path()).await;
    let b = Broker::start();
    let r = redis();
    let redis_url = format!("redis://127.0.0.1:{}/0", r.1);
    let embedded = dir.path().join("state.redb");
    let embedded = embedded.to_str().unwrap();
    let e = throughput(&b, &reg, embedded, "embedded", sizes.events).await;
    let rs = throughput(&b, &reg, &redis_url, "redis", sizes.events).await;
    println!(
        "kafka → state, {} events (a backlog): embedded {e:.0} events/s, redis {rs:.0} events/s",
        sizes.events
    );
    for (name, state) in [("embedded", embedded), ("redis", redis_url.as_str())] {
        // librdkafka's default fetch wait, and a short one: tansu holds a fetch for the whole
        // wait even when a message arrives meanwhile (Kafka answers as soon as it has one).
        for (wait, options) in [
            ("default fetch.wait.max.ms (500)", &[][..]),
            ("fetch.wait.max.ms=10", &["fetch.wait.max.ms=10"][..]),
        ] {
            let topic = format!("probe-{name}-{}", options.len());
            let mut d = delays(&b, (&reg, state), &topic, options, sizes.probes).await;
            println!(
                "produce → changed score by id ({name}, {wait}, {} probes): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                d.len(),
                pct(&mut d, 0.5),
                pct(&mut d, 0.99),
                pct(&mut d, 1.0)
            );
        }
    }
}

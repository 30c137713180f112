//! `loyalscore bench`: a gRPC load generator for the scoring server. N concurrent request
//! loops over M channels, bounded by a request count and a time limit, with latency in an
//! HDR histogram. A benchmark tool: it measures, it asserts nothing.

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use tonic::transport::Channel;

use crate::features::{FEATURE_NAMES, N_FEATURES};
use crate::flags::ServerArgs;
use crate::proto::inference as v2;
use crate::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::proto::v1 as pb;
use crate::proto::v1::customer_state_client::CustomerStateClient;
use crate::proto::v1::scoring_client::ScoringClient;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Score with a feature vector inline.
    Features,
    /// Score with a --history-len purchase history (the server computes the features).
    History,
    /// BatchScore with --batch-size feature vectors.
    Batch,
    /// BatchScore with --batch-size customers of --history-len purchases each: the heavy
    /// batches a hostile or careless client sends.
    HistoryBatch,
    /// KServe V2 ModelInfer with a [--batch-size, 29] FP64 tensor (this server, MLServer,
    /// Triton, ...).
    V2,
    /// grpc.health.v1 Check: the transport's floor on this machine, no model work.
    Health,
    /// Score by customer id alone, from the server's stored state: ids C0000001 ... up to
    /// --customers, in turn (load them first: loyalscore state load).
    ById,
    /// RecordPurchases with --batch-size new events a call, spread over --customers, timed
    /// now (an event is "applied" only if it is not late for a customer already stored).
    Record,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// What each request does.
    #[arg(long, value_enum, default_value = "features")]
    pub mode: Mode,
    /// Requests in flight at once (each its own request loop).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// HTTP/2 connections the request loops share.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Stop after this many measured requests in all ...
    #[arg(long, default_value_t = 100_000)]
    pub requests: u64,
    /// ... or after this many seconds, whichever comes first.
    #[arg(long, default_value_t = 20)]
    pub duration_secs: u64,
    /// Unmeasured requests each loop sends first (warm-up).
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// Customers per BatchScore call, or rows per V2 tensor.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Purchases in each history (history and history-batch modes).
    #[arg(long, default_value_t = 20)]
    pub history_len: usize,
    /// Requests a second each loop sends, on a fixed schedule (0: each request as soon as
    /// the previous one is answered). A victim's latency beside other load is measured at a
    /// fixed rate, so the load does not slow the victim's own sending.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Ask for reasons in each Score (features and history modes).
    #[arg(long)]
    pub explain: bool,
    /// Client runtime threads; 0: one when --concurrency is 1 (a lone caller's thread hops
    /// are latency), else one per core.
    #[arg(long, default_value_t = 0)]
    pub client_threads: usize,
    /// Customers the by-id and record modes address (ids C0000001 onwards).
    #[arg(long, default_value_t = 50_000)]
    pub customers: usize,
    /// Model name sent in --mode v2 requests.
    #[arg(long, default_value = "loyalscore")]
    pub model: String,
    /// In --mode v2, send the tensor as raw_input_contents bytes (what tritonclient sends; the
    /// answer comes back raw too) instead of typed contents.
    #[arg(long)]
    pub raw: bool,
}

/// A plausible customer: 63 days since the last purchase, usually every 42.
fn feature_values(k: usize) -> Vec<f64> {
    let mut v = vec![1.0; N_FEATURES];
    let mut set = |name: &str, x: f64| {
        if let Some(i) = FEATURE_NAMES.iter().position(|n| *n == name) {
            v[i] = x;
        }
    };
    set("recency_days", 20.0 + (k % 90) as f64);
    set("tenure_days", 700.0);
    set("purchases_total", 16.0);
    set("visits_total", 15.0);
    set("mean_gap_days", 42.0);
    set("overdue_ratio", (20.0 + (k % 90) as f64) / 42.0);
    set("spend_365d", 400.0 + k as f64);
    set("avg_basket", 35.0);
    v
}

fn names() -> Vec<String> {
    FEATURE_NAMES.iter().map(|s| s.to_string()).collect()
}

/// What each request is; the by-id and record modes vary it with the request's number.
enum Req {
    ById {
        customers: usize,
    },
    Record {
        batch: usize,
        customers: usize,
        /// The run's start: event ids carry it, so a second run records new events, not
        /// replays. Events are timed when they are sent (after any history loaded).
        base: i64,
    },
    One(pb::ScoreRequest),
    Batch(pb::BatchScoreRequest),
    V2(v2::ModelInferRequest),
    Health,
}

/// Every client the modes need, over one channel.
struct Clients {
    scoring: ScoringClient<Channel>,
    state: CustomerStateClient<Channel>,
    v2: GrpcInferenceServiceClient<Channel>,
    health: HealthClient<Channel>,
}

impl Clients {
    fn new(ch: Channel) -> Self {
        Clients {
            scoring: ScoringClient::new(ch.clone())
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20),
            v2: GrpcInferenceServiceClient::new(ch.clone())
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20),
            state: CustomerStateClient::new(ch.clone())
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20),
            health: HealthClient::new(ch),
        }
    }
}

fn request(a: &BenchArgs) -> Req {
    let now = chrono::Utc::now().timestamp();
    match a.mode {
        Mode::Features => Req::One(pb::ScoreRequest {
            customer_id: "bench".into(),
            input: Some(pb::score_request::Input::Features(pb::Features {
                names: names(),
                values: feature_values(7),
            })),
            explain: a.explain,
            ..Default::default()
        }),
        Mode::History => Req::One(pb::ScoreRequest {
            customer_id: "bench".into(),
            input: Some(history(a.history_len, now)),
            explain: a.explain,
            ..Default::default()
        }),
        Mode::HistoryBatch => Req::Batch(pb::BatchScoreRequest {
            feature_names: vec![],
            items: (0..a.batch_size)
                .map(|k| pb::ScoreRequest {
                    customer_id: format!("c{k}"),
                    input: Some(history(a.history_len, now)),
                    ..Default::default()
                })
                .collect(),
        }),
        Mode::Batch => Req::Batch(pb::BatchScoreRequest {
            feature_names: names(),
            items: (0..a.batch_size)
                .map(|k| pb::ScoreRequest {
                    customer_id: format!("c{k}"),
                    input: Some(pb::score_request::Input::Features(pb::Features {
                        names: vec![],
                        values: feature_values(k),
                    })),
                    explain: a.explain,
                    ..Default::default()
                })
                .collect(),
        }),
        Mode::V2 => Req::V2(v2_request(a)),
        Mode::Health => Req::Health,
        Mode::ById => Req::ById {
            customers: a.customers.max(1),
        },
        Mode::Record => Req::Record {
            batch: a.batch_size.max(1),
            customers: a.customers.max(1),
            base: now,
        },
    }
}

/// `n` purchases, the latest a month before `now`, then one a month (spaced closer past 36,
/// so long histories stay within the last three years).
fn history(n: usize, now: i64) -> pb::score_request::Input {
    let gap = if n <= 36 {
        30 * 86_400
    } else {
        1_095 * 86_400 / n as i64
    };
    pb::score_request::Input::History(pb::History {
        transactions: (1..=n as i64)
            .map(|i| pb::Transaction {
                time: Some(prost_types::Timestamp {
                    seconds: now - 30 * 86_400 - (i - 1) * gap,
                    nanos: 0,
                }),
                amount: 20.0 + (i % 13) as f64,
                points_earned: 20.0,
                points_redeemed: 0.0,
                channel: if i % 2 == 0 { "web" } else { "store" }.into(),
            })
            .collect(),
    })
}

/// A V2 tensor of `--batch-size` rows, typed or (`--raw`) as little-endian bytes.
fn v2_request(a: &BenchArgs) -> v2::ModelInferRequest {
    let values: Vec<f64> = (0..a.batch_size).flat_map(feature_values).collect();
    let (contents, raw_input_contents) = if a.raw {
        (
            None,
            vec![values.iter().flat_map(|v| v.to_le_bytes()).collect()],
        )
    } else {
        let typed = v2::InferTensorContents {
            fp64_contents: values,
            ..Default::default()
        };
        (Some(typed), vec![])
    };
    v2::ModelInferRequest {
        model_name: a.model.clone(),
        inputs: vec![v2::model_infer_request::InferInputTensor {
            name: "features".into(),
            datatype: "FP64".into(),
            shape: vec![a.batch_size as i64, N_FEATURES as i64],
            contents,
        }],
        raw_input_contents,
        ..Default::default()
    }
}

/// The `n`-th request of loop `lane` of a varying mode.
fn varied(r: &Req, lane: usize, n: u64) -> Option<Varied> {
    let id = |k: u64, customers: usize| format!("C{:07}", k % customers as u64 + 1);
    match *r {
        Req::ById { customers } => Some(Varied::Score(pb::ScoreRequest {
            customer_id: id(n * 7919 + lane as u64, customers),
            ..Default::default()
        })),
        Req::Record {
            batch,
            customers,
            base,
        } => Some(Varied::Record(pb::RecordPurchasesRequest {
            events: {
                let sent = chrono::Utc::now().timestamp();
                (0..batch as u64)
                    .map(|i| pb::PurchaseEvent {
                        customer_id: id(n * batch as u64 + i + lane as u64 * 104_729, customers),
                        event_id: format!("bench-{base}-{lane}-{n}-{i}"),
                        transaction: Some(pb::Transaction {
                            time: Some(prost_types::Timestamp {
                                seconds: sent,
                                nanos: 0,
                            }),
                            amount: 25.0,
                            ..Default::default()
                        }),
                    })
                    .collect()
            },
        })),
        _ => None,
    }
}

enum Varied {
    Score(pb::ScoreRequest),
    Record(pb::RecordPurchasesRequest),
}

async fn send(c: &mut Clients, r: &Req, v: Option<Varied>) -> bool {
    match v {
        Some(Varied::Score(x)) => return c.scoring.score(x).await.is_ok(),
        Some(Varied::Record(x)) => {
            return c
                .state
                .record_purchases(x)
                .await
                .is_ok_and(|r| r.into_inner().applied > 0)
        }
        None => {}
    }
    match r {
        Req::ById { .. } | Req::Record { .. } => false,
        Req::One(x) => c.scoring.score(x.clone()).await.is_ok(),
        Req::Batch(x) => c
            .scoring
            .batch_score(x.clone())
            .await
            .map(|b| {
                b.into_inner()
                    .results
                    .iter()
                    .all(|i| matches!(i.result, Some(pb::batch_item::Result::Score(_))))
            })
            .unwrap_or(false),
        Req::V2(x) => {
            c.v2.model_infer(x.clone())
                .await
                .map(|r| !r.into_inner().outputs.is_empty())
                .unwrap_or(false)
        }
        Req::Health => c
            .health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .is_ok(),
    }
}

/// The client's runtime (see `--client-threads`).
pub fn runtime(a: &BenchArgs) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match a.client_threads {
        0 if a.concurrency <= 1 => 1,
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

pub async fn run(a: BenchArgs, json: bool) -> anyhow::Result<()> {
    let mut channels = Vec::new();
    for _ in 0..a.channels.max(1) {
        channels.push(a.server.connect().await?);
    }
    let req = std::sync::Arc::new(request(&a));
    let per_loop = a.requests / a.concurrency.max(1) as u64;
    let duration = Duration::from_secs(a.duration_secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..a.concurrency.max(1))
        .map(|i| {
            let client = Clients::new(channels[i % channels.len()].clone());
            tokio::spawn(request_loop(
                client,
                (req.clone(), i),
                (a.warmup, per_loop),
                duration,
                a.rate,
            ))
        })
        .collect();
    let mut all = Tally::new()?;
    for t in tasks {
        all.add(t.await??)?;
    }
    let per_request = match a.mode {
        Mode::Batch | Mode::HistoryBatch | Mode::V2 | Mode::Record => a.batch_size as u64,
        _ => 1,
    };
    print_tally(&a, &all, per_request, started.elapsed(), json);
    Ok(())
}

/// What the request loops measured.
struct Tally {
    histogram: Histogram<u64>,
    requests: u64,
    errors: u64,
    /// The longest loop's measured time: the run's duration.
    longest: Duration,
}

impl Tally {
    /// Latencies from 1 µs to 60 s at three significant digits.
    fn new() -> Result<Self, hdrhistogram::CreationError> {
        Ok(Tally {
            histogram: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
            requests: 0,
            errors: 0,
            longest: Duration::ZERO,
        })
    }

    fn add(&mut self, other: Tally) -> anyhow::Result<()> {
        self.histogram.add(&other.histogram)?;
        self.requests += other.requests;
        self.errors += other.errors;
        self.longest = self.longest.max(other.longest);
        Ok(())
    }
}

/// One request loop: `warmup` unmeasured requests, then up to `n` measured ones, bounded by
/// `duration`; at `rate` a second when above 0.
async fn request_loop(
    mut client: Clients,
    (req, lane): (std::sync::Arc<Req>, usize),
    (warmup, n): (u64, u64),
    duration: Duration,
    rate: f64,
) -> anyhow::Result<Tally> {
    // Each loop's schedule, late requests sent at once (their wait is not measured: the
    // latency is the call's).
    let mut tick = (rate > 0.0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        t
    });
    let mut seq = 0u64;
    for _ in 0..warmup {
        let v = varied(&req, lane, seq);
        seq += 1;
        send(&mut client, &req, v).await;
    }
    let deadline = Instant::now() + duration;
    let mut t = Tally::new()?;
    let t0 = Instant::now();
    while t.requests < n && Instant::now() < deadline {
        // A varying request is built before the clock starts: only the call is measured.
        let v = varied(&req, lane, seq);
        seq += 1;
        if let Some(t) = &mut tick {
            t.tick().await;
        }
        let at = Instant::now();
        if !send(&mut client, &req, v).await {
            t.errors += 1;
        }
        let _ = t.histogram.record(at.elapsed().as_micros().max(1) as u64);
        t.requests += 1;
    }
    t.longest = t0.elapsed();
    Ok(t)
}

fn print_tally(a: &BenchArgs, t: &Tally, per_request: u64, wall: Duration, json: bool) {
    let secs = t.longest.as_secs_f64().max(1e-9);
    let h = &t.histogram;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "mode": format!("{:?}", a.mode),
                "concurrency": a.concurrency,
                "channels": a.channels,
                "batch_size": per_request,
                "requests": t.requests,
                "errors": t.errors,
                "seconds": secs,
                "requests_per_sec": t.requests as f64 / secs,
                "rows_per_sec": (t.requests * per_request) as f64 / secs,
                "p50_us": h.value_at_quantile(0.5),
                "p99_us": h.value_at_quantile(0.99),
                "p999_us": h.value_at_quantile(0.999),
                "max_us": h.max(),
            })
        );
        return;
    }
    println!(
        "mode {:?}, concurrency {}, channels {}, explain {}, {} requests in {:.2} s (wall {:.2} s)",
        a.mode,
        a.concurrency,
        a.channels,
        a.explain,
        t.requests,
        secs,
        wall.as_secs_f64()
    );
    let rows = if a.mode == Mode::Record {
        "events"
    } else {
        "customers"
    };
    println!(
        "throughput {:.0} req/s, {:.0} {rows}/s, errors {}",
        t.requests as f64 / secs,
        (t.requests * per_request) as f64 / secs,
        t.errors
    );
    println!(
        "latency us: p50 {} p99 {} p99.9 {} max {}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
}

//! `loyalscore bench`: a gRPC load generator for the scoring server. N concurrent request
//! loops over M channels, bounded by a request count and a time limit, with latency in an
//! HDR histogram. A benchmark tool: it measures, it asserts nothing.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use tonic::transport::Channel;

use crate::features::{FEATURE_NAMES, N_FEATURES};
use crate::proto::inference as v2;
use crate::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::proto::v1 as pb;
use crate::proto::v1::scoring_client::ScoringClient;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    /// Score with a feature vector inline.
    Features,
    /// Score with a 20-purchase history (the server computes the features).
    History,
    /// BatchScore with --batch-size feature vectors.
    Batch,
    /// KServe V2 ModelInfer with a [--batch-size, 23] FP64 tensor (this server, MLServer,
    /// Triton, ...).
    V2,
    /// grpc.health.v1 Check: the transport's floor on this machine, no model work.
    Health,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(
        long,
        env = "LOYALSCORE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    #[arg(long, value_enum, default_value = "features")]
    pub mode: Mode,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// HTTP/2 connections they share.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Stop after this many requests ...
    #[arg(long, default_value_t = 100_000)]
    pub requests: u64,
    /// ... or after this many seconds, whichever comes first.
    #[arg(long, default_value_t = 20)]
    pub duration_secs: u64,
    /// Unmeasured requests first, per loop.
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// Customers per BatchScore.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Ask for reasons.
    #[arg(long)]
    pub explain: bool,
    /// Client runtime threads; 0: one when --concurrency is 1 (a lone caller's thread hops
    /// are latency), else one per core.
    #[arg(long, default_value_t = 0)]
    pub client_threads: usize,
    /// Model name for --mode v2.
    #[arg(long, default_value = "loyalscore")]
    pub model: String,
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

enum Req {
    One(pb::ScoreRequest),
    Batch(pb::BatchScoreRequest),
    V2(v2::ModelInferRequest),
    Health,
}

/// Every client the modes need, over one channel.
struct Clients {
    scoring: ScoringClient<Channel>,
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
            input: Some(pb::score_request::Input::History(pb::History {
                transactions: (1..=20)
                    .map(|i| pb::Transaction {
                        time: Some(prost_types::Timestamp {
                            seconds: now - i * 30 * 86_400,
                            nanos: 0,
                        }),
                        amount: 20.0 + i as f64,
                        points_earned: 20.0,
                        points_redeemed: 0.0,
                        channel: if i % 2 == 0 {
                            "web".into()
                        } else {
                            "store".into()
                        },
                    })
                    .collect(),
            })),
            explain: a.explain,
            ..Default::default()
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
        Mode::V2 => Req::V2(v2::ModelInferRequest {
            model_name: a.model.clone(),
            inputs: vec![v2::model_infer_request::InferInputTensor {
                name: "input-0".into(),
                datatype: "FP64".into(),
                shape: vec![a.batch_size as i64, N_FEATURES as i64],
                contents: Some(v2::InferTensorContents {
                    fp64_contents: (0..a.batch_size).flat_map(feature_values).collect(),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        }),
        Mode::Health => Req::Health,
    }
}

async fn send(c: &mut Clients, r: &Req) -> bool {
    match r {
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
        channels.push(
            Channel::from_shared(a.server.clone())?
                .connect()
                .await
                .with_context(|| format!("connecting to {}", a.server))?,
        );
    }
    let req = std::sync::Arc::new(request(&a));
    let per_loop = a.requests / a.concurrency.max(1) as u64;
    let duration = Duration::from_secs(a.duration_secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..a.concurrency.max(1) {
        let mut client = Clients::new(channels[i % channels.len()].clone());
        let (req, warmup) = (req.clone(), a.warmup);
        tasks.push(tokio::spawn(async move {
            for _ in 0..warmup {
                send(&mut client, &req).await;
            }
            let deadline = Instant::now() + duration;
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
            let (mut n, mut errors) = (0u64, 0u64);
            let t0 = Instant::now();
            while n < per_loop && Instant::now() < deadline {
                let t = Instant::now();
                if !send(&mut client, &req).await {
                    errors += 1;
                }
                if let Some(h) = h.as_mut() {
                    let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                }
                n += 1;
            }
            (h, n, errors, t0.elapsed())
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut total, mut errors, mut longest) = (0u64, 0u64, Duration::ZERO);
    for t in tasks {
        let (h, n, e, took) = t.await?;
        if let Some(h) = h {
            all.add(&h)?;
        }
        total += n;
        errors += e;
        longest = longest.max(took);
    }
    let secs = longest.as_secs_f64().max(1e-9);
    let per_request = match a.mode {
        Mode::Batch | Mode::V2 => a.batch_size as u64,
        _ => 1,
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "mode": format!("{:?}", a.mode),
                "concurrency": a.concurrency,
                "channels": a.channels,
                "batch_size": per_request,
                "requests": total,
                "errors": errors,
                "seconds": secs,
                "requests_per_sec": total as f64 / secs,
                "rows_per_sec": (total * per_request) as f64 / secs,
                "p50_us": all.value_at_quantile(0.5),
                "p99_us": all.value_at_quantile(0.99),
                "p999_us": all.value_at_quantile(0.999),
                "max_us": all.max(),
            })
        );
        return Ok(());
    }
    println!(
        "mode {:?}, concurrency {}, channels {}, explain {}, {} requests in {:.2} s (wall {:.2} s)",
        a.mode,
        a.concurrency,
        a.channels,
        a.explain,
        total,
        secs,
        started.elapsed().as_secs_f64()
    );
    println!(
        "throughput {:.0} req/s, {:.0} customers/s, errors {errors}",
        total as f64 / secs,
        (total * per_request) as f64 / secs
    );
    println!(
        "latency us: p50 {} p99 {} p99.9 {} max {}",
        all.value_at_quantile(0.5),
        all.value_at_quantile(0.99),
        all.value_at_quantile(0.999),
        all.max()
    );
    Ok(())
}

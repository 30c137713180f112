//! `loyalscore score-log`: every customer of a transaction log scored by a running server as
//! of a date, in BatchScore calls, to a CSV: the nightly CRM export, and the way to put a
//! population through an experiment.

use std::io::Write;

use anyhow::Context;
use clap::Args;

use crate::proto::v1 as pb;
use crate::proto::v1::scoring_client::ScoringClient;
use crate::trainer::time::parse_as_of;
use tonic::transport::Channel;

#[derive(Args, Debug)]
pub struct ScoreLogArgs {
    /// Server address.
    #[arg(
        long,
        env = "LOYALSCORE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// Transaction CSV: a path or an object-store URL.
    #[arg(long)]
    pub transactions: String,
    /// Score as of: YYYY-MM-DD (end of that day) or RFC 3339; later transactions are not sent.
    #[arg(long)]
    pub as_of: String,
    /// Output CSV.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Customers per BatchScore call.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Pin a version (bypasses any experiment).
    #[arg(long)]
    pub version: Option<String>,
    /// Stop reading the transactions past this share of bad rows.
    #[arg(long, default_value_t = 0.01)]
    pub max_bad_share: f64,
    /// Seconds to wait for the server to be up with a model loaded (a job started beside it).
    #[arg(long, default_value_t = 30)]
    pub wait_secs: u64,
}

/// Connects once the server answers and reports a model loaded, or gives up after `wait`.
async fn ready_channel(server: &str, wait: std::time::Duration) -> anyhow::Result<Channel> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let deadline = std::time::Instant::now() + wait;
    let endpoint = Channel::from_shared(server.to_string())
        .with_context(|| format!("--server {server:?} is not a URL"))?;
    loop {
        let why = match endpoint.connect().await {
            Ok(ch) => {
                let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
                let req = tonic_health::pb::HealthCheckRequest {
                    service: "loyalscore.v1.Scoring".into(),
                };
                match health.check(req).await {
                    Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => return Ok(ch),
                    Ok(_) => "no model loaded yet".to_string(),
                    Err(s) => s.message().to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("{server} is not ready after {} s: {why}", wait.as_secs());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub fn run(a: ScoreLogArgs, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let as_of = parse_as_of(&a.as_of).with_context(|| {
        format!(
            "--as-of {:?} is neither YYYY-MM-DD nor an RFC 3339 timestamp",
            a.as_of
        )
    })?;
    if a.batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    let log = super::train::load_log(&a.transactions, a.max_bad_share, rt)?;
    let file =
        std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    writeln!(
        w,
        "customer_id,churn_probability,clv,segment,model_version,experiment,arm"
    )?;
    let (scored, failed) = rt.block_on(async {
        let channel = ready_channel(&a.server, std::time::Duration::from_secs(a.wait_secs)).await?;
        let mut client = ScoringClient::new(channel)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        let customers: Vec<usize> = (0..log.n_customers())
            .filter(|&c| log.customer(c).first().is_some_and(|r| r.ts <= as_of))
            .collect();
        let (mut scored, mut failed) = (0u64, 0u64);
        for chunk in customers.chunks(a.batch) {
            let items = chunk
                .iter()
                .map(|&c| pb::ScoreRequest {
                    customer_id: log.ids[c].clone(),
                    input: Some(pb::score_request::Input::History(pb::History {
                        transactions: log
                            .customer(c)
                            .iter()
                            .take_while(|r| r.ts <= as_of)
                            .map(|r| pb::Transaction {
                                time: Some(prost_types::Timestamp {
                                    seconds: r.ts,
                                    nanos: 0,
                                }),
                                amount: r.amount,
                                points_earned: r.points_earned,
                                points_redeemed: r.points_redeemed,
                                channel: log
                                    .channel_names
                                    .get(&r.channel)
                                    .cloned()
                                    .unwrap_or_default(),
                            })
                            .collect(),
                    })),
                    as_of: Some(prost_types::Timestamp {
                        seconds: as_of,
                        nanos: 0,
                    }),
                    version: a.version.clone().unwrap_or_default(),
                    explain: false,
                })
                .collect();
            let r = client
                .batch_score(pb::BatchScoreRequest {
                    items,
                    feature_names: vec![],
                })
                .await
                .map_err(|s| anyhow::anyhow!("BatchScore: {:?}: {}", s.code(), s.message()))?
                .into_inner();
            for item in r.results {
                match item.result {
                    Some(pb::batch_item::Result::Score(s)) => {
                        scored += 1;
                        writeln!(
                            w,
                            "{},{},{},{},{},{},{}",
                            s.customer_id,
                            if s.holdout {
                                String::new()
                            } else {
                                format!("{:.6}", s.churn_probability)
                            },
                            if s.holdout {
                                String::new()
                            } else {
                                format!("{:.2}", s.clv)
                            },
                            s.segment,
                            s.model_version,
                            s.experiment,
                            s.arm
                        )?;
                    }
                    Some(pb::batch_item::Result::Error(e)) => {
                        failed += 1;
                        if failed <= 5 {
                            eprintln!("item {}: {} {}: {}", item.index, e.code, e.field, e.message);
                        }
                    }
                    None => failed += 1,
                }
            }
        }
        anyhow::Ok((scored, failed))
    })?;
    w.flush()?;
    println!(
        "scored {scored} customers into {} ({failed} failed)",
        a.out.display()
    );
    if failed > 0 {
        anyhow::bail!("{failed} customers could not be scored");
    }
    Ok(())
}

//! `loyalscore score-log`: every customer of a transaction log scored by a running server as
//! of a date, in BatchScore calls, to a CSV: the nightly CRM export, and the way to put a
//! population through an experiment.

use std::io::Write;

use anyhow::Context;
use clap::Args;

use crate::flags::{self, ServerArgs, TransactionsArgs};
use crate::proto::v1 as pb;
use crate::proto::v1::scoring_client::ScoringClient;
use crate::scoring::Timing;
use crate::trainer::batch::score_header;
use crate::trainer::TransactionLog;
use tonic::transport::Channel;

#[derive(Args, Debug)]
pub struct ScoreLogArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub transactions: TransactionsArgs,
    /// Score as of: YYYY-MM-DD (the end of that day) or an RFC 3339 instant; purchases from
    /// then on are not sent.
    #[arg(long, value_parser = flags::as_of)]
    pub as_of: i64,
    /// Output CSV: customer_id, churn_probability, clv, segment, version, the timing columns
    /// (typical_gap_days ... contact_by), as `loyalscore-train score` writes them, then
    /// experiment and arm.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Customers per BatchScore call.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Pin this version id (bypasses any experiment).
    #[arg(long)]
    pub version: Option<String>,
    /// Seconds to wait for the server to be up with a model loaded (a job started beside it).
    #[arg(long, default_value_t = 30)]
    pub wait_secs: u64,
}

/// Connects once the server answers and reports a model loaded, or gives up after `wait`.
async fn ready_channel(args: &ServerArgs, wait: std::time::Duration) -> anyhow::Result<Channel> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let deadline = std::time::Instant::now() + wait;
    let server = args.server.as_str();
    let endpoint = args.endpoint()?;
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
    if a.batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    let log = super::train::load_log(&a.transactions, rt)?;
    let file =
        std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    // Quoted as needed: a customer id may hold a comma.
    let mut w = csv::Writer::from_writer(std::io::BufWriter::new(file));
    let mut header = score_header();
    header.extend(["experiment", "arm"]);
    w.write_record(&header)?;
    let counts = rt.block_on(score_all(&a, &log, &mut w))?;
    w.flush()?;
    println!(
        "scored {} customers into {} ({} failed)",
        counts.scored,
        a.out.display(),
        counts.failed
    );
    if counts.failed > 0 {
        anyhow::bail!("{} customers could not be scored", counts.failed);
    }
    Ok(())
}

/// One row of the log as the API's transaction.
pub fn transaction(log: &TransactionLog, r: &crate::trainer::load::LogRow) -> pb::Transaction {
    pb::Transaction {
        time: Some(prost_types::Timestamp {
            seconds: r.ts,
            nanos: 0,
        }),
        amount: r.amount,
        points_earned: r.points_earned,
        points_redeemed: r.points_redeemed,
        channel: log.channel_name(r),
    }
}

/// Customer `c`'s history at `as_of` (the purchases before it), as a Score request.
pub fn history_request(
    log: &TransactionLog,
    c: usize,
    as_of: i64,
    version: &str,
) -> pb::ScoreRequest {
    let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    let transactions = log
        .history(c, as_of)
        .iter()
        .map(|r| transaction(log, r))
        .collect();
    pb::ScoreRequest {
        customer_id: log.ids[c].clone(),
        input: Some(pb::score_request::Input::History(pb::History {
            transactions,
        })),
        as_of: at(as_of),
        version: version.to_string(),
        explain: false,
        locale: String::new(),
    }
}

#[derive(Default)]
struct Counts {
    scored: u64,
    failed: u64,
}

/// Every customer with a purchase before `--as-of`, in BatchScore calls of `--batch`.
async fn score_all(
    a: &ScoreLogArgs,
    log: &TransactionLog,
    w: &mut csv::Writer<impl Write>,
) -> anyhow::Result<Counts> {
    let wait = std::time::Duration::from_secs(a.wait_secs);
    let channel = ready_channel(&a.server, wait).await?;
    let mut client = ScoringClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    let customers: Vec<usize> = (0..log.n_customers())
        .filter(|&c| !log.history(c, a.as_of).is_empty())
        .collect();
    let version = a.version.as_deref().unwrap_or_default();
    let mut counts = Counts::default();
    for chunk in customers.chunks(a.batch) {
        let items = chunk
            .iter()
            .map(|&c| history_request(log, c, a.as_of, version))
            .collect();
        let req = a.server.request(pb::BatchScoreRequest {
            items,
            feature_names: vec![],
        })?;
        let r = client
            .batch_score(req)
            .await
            .map_err(|s| anyhow::anyhow!("BatchScore: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        for item in r.results {
            let id = chunk
                .get(item.index as usize)
                .map_or("?", |&c| log.ids[c].as_str());
            write_result(w, id, item, &mut counts)?;
        }
    }
    Ok(counts)
}

/// One answer as a CSV row (holdout customers have no scores); the first errors go to
/// stderr with the customer's id (this is the user's own terminal and data, not a log).
fn write_result(
    w: &mut csv::Writer<impl Write>,
    id: &str,
    item: pb::BatchItem,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    match item.result {
        Some(pb::batch_item::Result::Score(s)) => {
            counts.scored += 1;
            let (churn, clv, timing) = if s.holdout {
                (
                    String::new(),
                    String::new(),
                    vec![String::new(); Timing::COLUMNS.len()],
                )
            } else {
                (
                    format!("{:.6}", s.churn_probability),
                    format!("{:.2}", s.clv),
                    timing_of(&s).cells().to_vec(),
                )
            };
            let mut row = vec![s.customer_id, churn, clv, s.segment, s.model_version];
            row.extend(timing);
            row.extend([s.out_of_range.join(";"), s.experiment, s.arm]);
            w.write_record(&row)?;
        }
        Some(pb::batch_item::Result::Error(e)) => {
            counts.failed += 1;
            if counts.failed <= 5 {
                eprintln!("customer {id:?}: {} {}: {}", e.code, e.field, e.message);
            }
        }
        None => counts.failed += 1,
    }
    Ok(())
}

/// The answer's timing fields, back as the domain value the CSV cells come from.
fn timing_of(s: &pb::ScoreResponse) -> Timing {
    let at = |t: &Option<prost_types::Timestamp>| t.as_ref().map_or(0, |t| t.seconds);
    Timing {
        typical_gap_days: s.typical_gap_days,
        expected_next_purchase: at(&s.expected_next_purchase),
        days_overdue: s.days_overdue,
        overdue_percentile: s.overdue_percentile,
        contact_from: at(&s.contact_from),
        contact_by: at(&s.contact_by),
    }
}

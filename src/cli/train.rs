//! Flags and output of `loyalscore-train`.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use object_store::ObjectStoreExt;

use crate::flags::{self, AliasArgs, LogArgs, RegistryArgs, StateArgs, TransactionsArgs};
use crate::model::SegmentRules;
use crate::registry::{open_store, Expect, Registry};
use crate::time::parse_timestamp;
use crate::trainer::generate::{generate, write_truth, GenerateOptions};
use crate::trainer::{
    self, report, CalibrationMethod, FitOptions, Overrides, RunInfo, SplitOptions, TrainError,
    TransactionLog,
};

use super::progress::{bar, Bars};

#[derive(Parser, Debug)]
#[command(
    name = "loyalscore-train",
    version,
    about = "Train, evaluate and publish loyalscore models"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Write a deterministic synthetic transaction log and its ground truth.
    Generate(GenerateArgs),
    /// Train both forests, evaluate them against baselines, publish a version.
    Fit(Box<FitArgs>),
    /// Score every customer of a log at a date with a published version (CSV out).
    Score(OfflineScoreArgs),
    /// Read out an A/B experiment: its exposures joined with what customers did afterwards.
    ExperimentReport(ExperimentReportArgs),
}

#[derive(Args, Debug)]
pub struct ExperimentReportArgs {
    /// Where the server wrote exposures (its --exposure-log): a folder or a bucket URL.
    #[arg(long)]
    pub exposures: String,
    #[command(flatten)]
    pub transactions: TransactionsArgs,
    /// The secret key the server hashed customer ids with (its --exposure-key).
    #[arg(long, env = "LOYALSCORE_EXPOSURE_KEY", hide_env_values = true)]
    pub exposure_key: String,
    /// The experiment to read out (needed when the exposures hold several).
    #[arg(long)]
    pub experiment: Option<String>,
    /// Bootstrap resamples of the customers in each arm (at least 100).
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Two-sided coverage of the intervals, as a share in [0.5, 1) (0.95 = 95 % intervals).
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also write the read-out as one self-contained HTML page (plots inline).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct OfflineScoreArgs {
    #[command(flatten)]
    pub transactions: TransactionsArgs,
    /// Score as of: YYYY-MM-DD (the end of that day) or an RFC 3339 instant; purchases from
    /// then on are not history.
    #[arg(long, value_parser = flags::as_of)]
    pub as_of: i64,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub alias: AliasArgs,
    /// Score with this version id instead of the alias's.
    #[arg(long)]
    pub version: Option<String>,
    /// Output CSV: customer_id, churn_probability, clv, segment, version, then the timing
    /// columns (typical_gap_days, expected_next_purchase, days_overdue, overdue_percentile,
    /// contact_from, contact_by).
    #[arg(long, default_value = "scores.csv")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct QuickstartArgs {
    /// Sample data to use, generated first if missing.
    #[arg(long, default_value = "data/sample.csv")]
    pub data: PathBuf,
    /// Customers to generate when the sample data is missing.
    #[arg(long, default_value_t = 50_000)]
    pub customers: usize,
    /// Where the server listens, host:port.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// Stop after promoting (do not start the server).
    #[arg(long)]
    pub no_serve: bool,
    /// The sample data goes into this live state too, for scoring by customer id.
    #[command(flatten)]
    pub state: StateArgs,
    /// Where the server's Prometheus metrics listen, host:port (GET /metrics), or "off".
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_listen: String,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Customers to simulate.
    #[arg(long, default_value_t = 50_000)]
    pub customers: usize,
    /// Random seed: the same seed gives the same file, byte for byte.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Output CSV; the ground truth goes beside it as NAME.truth.csv.
    #[arg(long, default_value = "data/sample.csv")]
    pub out: PathBuf,
    /// First day of the log, YYYY-MM-DD.
    #[arg(long, default_value = "2023-01-01")]
    pub start: String,
    /// Length of the log in days.
    #[arg(long, default_value_t = 1095)]
    pub days: u32,
    /// Overwrite --out (and its truth file) if they exist.
    #[arg(long)]
    pub force: bool,
}

#[derive(Parser, Debug)]
pub struct FitArgs {
    #[command(flatten)]
    pub transactions: TransactionsArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Validation snapshot: YYYY-MM-DD (the end of that day) or an RFC 3339 instant.
    /// Default: the end of the data minus the horizon.
    #[arg(long, value_parser = flags::as_of)]
    pub as_of: Option<i64>,
    /// Horizon in days: churn = no purchase within it; CLV = spend within it.
    #[arg(long, default_value_t = 180)]
    pub horizon_days: u32,
    /// A customer counts at a snapshot if they bought within this many days before it.
    #[arg(long, default_value_t = 365)]
    pub lookback_days: u32,
    /// Most snapshots stacked for training (and for the refit), one every
    /// --snapshot-stride-days, so the forests see every time of the year.
    #[arg(long, default_value_t = 12)]
    pub train_snapshots: usize,
    /// Days between stacked training snapshots.
    #[arg(long, default_value_t = 30)]
    pub snapshot_stride_days: u32,
    /// Most earlier validation snapshots, one calendar quarter (91 days) apart, beside the
    /// latest: a validation figure per quarter where the data allows.
    #[arg(long, default_value_t = 3)]
    pub validation_quarters: usize,
    /// Trees per forest.
    #[arg(long, default_value_t = 100)]
    pub trees: usize,
    /// Churn forest depth in levels (root = 1), or "none"; default: chosen on a grid.
    #[arg(long, value_parser = parse_depth)]
    pub churn_max_depth: Option<Depth>,
    /// Churn forest minimum training rows per leaf; default: chosen on a grid.
    #[arg(long)]
    pub churn_min_samples_leaf: Option<usize>,
    /// CLV forest depth in levels (root = 1), or "none"; default: chosen on a grid.
    #[arg(long, value_parser = parse_depth)]
    pub clv_max_depth: Option<Depth>,
    /// CLV forest minimum training rows per leaf; default: chosen on a grid.
    #[arg(long)]
    pub clv_min_samples_leaf: Option<usize>,
    /// Features tried per split (default: the square root of the feature count).
    #[arg(long)]
    pub mtry: Option<usize>,
    /// Random seed of the forests: the same seed and thread count give the same version.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Training rows are sampled (by customer and snapshot hash) to about this many while
    /// they are built, so memory stays bounded however many snapshots are stacked.
    #[arg(long, default_value_t = 400_000)]
    pub max_train_rows: usize,
    /// Validation rows are sampled (by customer hash) to about this many.
    #[arg(long, default_value_t = 400_000)]
    pub max_validation_rows: usize,
    /// How raw churn probabilities are calibrated, learnt on an inner split of the training
    /// customers (auto: the method with the lowest cross-validated Brier score there).
    #[arg(long, value_enum, default_value_t = CalibrationMethod::Auto)]
    pub calibration: CalibrationMethod,
    #[command(flatten)]
    pub segments: SegmentArgs,
    /// Threads for fitting (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Train and evaluate, publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Publish even if the models do not beat their baselines.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object on stdout (version, published, metrics); the summaries go to
    /// stderr.
    #[arg(long)]
    pub json: bool,
    /// After publishing, point this alias at the new version: compare-and-swap against where
    /// it pointed when the fit started, so a move made meanwhile is never overwritten.
    #[arg(
        long,
        value_name = "ALIAS",
        conflicts_with = "dry_run",
        requires = "reason"
    )]
    pub promote: Option<String>,
    /// Also score the version this alias points at, beside the candidate, on the validation
    /// rows after that version's data ended (rows it was never fitted on).
    #[arg(long, value_name = "ALIAS")]
    pub compare_alias: Option<String>,
    /// Compare with this alias's version (as --compare-alias) and refuse to publish (exit 1)
    /// a candidate whose churn ROC-AUC or CLV Spearman is below it by more than
    /// --gate-margin. Without rows to compare on (the alias's data is too recent), the
    /// candidate is published but --promote does not move the alias. An alias that does not
    /// exist yet lets any candidate through.
    #[arg(long, value_name = "ALIAS", conflicts_with = "compare_alias")]
    pub gate_alias: Option<String>,
    /// How much worse (in ROC-AUC and in Spearman) the gate lets a candidate be.
    #[arg(long, default_value_t = 0.005, value_parser = gate_margin)]
    pub gate_margin: f64,
    #[command(flatten)]
    pub who: super::admin::Who,
}

fn gate_margin(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(m) if (0.0..=1.0).contains(&m) => Ok(m),
        _ => Err(format!("{s:?} is not a margin in [0, 1]")),
    }
}

/// The segment rules' thresholds (README "Segments"), stored in the version.
#[derive(Args, Debug, Clone)]
pub struct SegmentArgs {
    /// Calibrated churn probability at or above which an overdue customer is dormant
    /// (probably gone).
    #[arg(long, default_value_t = SegmentRules::default().churn_gone)]
    pub segment_churn_gone: f64,
    /// Calibrated churn probability at or above which an overdue customer is lapsing (or
    /// at_risk_valuable when valuable).
    #[arg(long, default_value_t = SegmentRules::default().churn_risk)]
    pub segment_churn_risk: f64,
    /// Calibrated churn probability at or below which a valuable customer is loyal.
    #[arg(long, default_value_t = SegmentRules::default().churn_low)]
    pub segment_churn_low: f64,
    /// Overdue percentile (share of their own gaps shorter than the silence, 0 to 1) at which
    /// the silence is unusual: the contact window opens, risk segments start.
    #[arg(long, default_value_t = SegmentRules::default().overdue_unusual)]
    pub segment_overdue_unusual: f64,
    /// Overdue percentile at which the contact window closes.
    #[arg(long, default_value_t = SegmentRules::default().overdue_late)]
    pub segment_overdue_late: f64,
    /// Net spend over the last year at or above which a customer is valuable, in the
    /// programme's currency. Default: the 80th percentile on the training rows, rounded to
    /// two significant digits.
    #[arg(long)]
    pub segment_value_high: Option<f64>,
    /// Rising: shopping days in the last 90 days at least this many times what the
    /// customer's own earlier rate gives for the same days (season-adjusted) ...
    #[arg(long, default_value_t = SegmentRules::default().rising_visits)]
    pub segment_rising_visits: f64,
    /// ... and net spend at least this many times.
    #[arg(long, default_value_t = SegmentRules::default().rising_spend)]
    pub segment_rising_spend: f64,
    /// Days after the first purchase during which a one-day customer is new.
    #[arg(long, default_value_t = SegmentRules::default().new_days)]
    pub segment_new_days: f64,
}

impl SegmentArgs {
    fn rules(&self) -> SegmentRules {
        SegmentRules {
            churn_gone: self.segment_churn_gone,
            churn_risk: self.segment_churn_risk,
            churn_low: self.segment_churn_low,
            overdue_unusual: self.segment_overdue_unusual,
            overdue_late: self.segment_overdue_late,
            value_high: self.segment_value_high.unwrap_or(0.0),
            rising_visits: self.segment_rising_visits,
            rising_spend: self.segment_rising_spend,
            new_days: self.segment_new_days,
        }
    }
}

/// A depth limit, or none.
#[derive(Debug, Clone, Copy)]
pub struct Depth(Option<u16>);

fn parse_depth(s: &str) -> Result<Depth, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Depth(None));
    }
    match s.parse::<u16>() {
        Ok(d) if d >= 1 => Ok(Depth(Some(d))),
        _ => Err(format!("{s:?} is not a depth (1 to 65535, or none)")),
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Generate(a) => run_generate(a),
        Cmd::Fit(a) => run_fit(*a).map(|_| ()),
        Cmd::Score(a) => run_offline_score(a),
        Cmd::ExperimentReport(a) => run_experiment_report(a),
    }
}

/// The embedded default end to end: sample data (generated unless present), a trained
/// version promoted to production in the registry, and a server until Ctrl-C.
pub fn run_quickstart(
    a: QuickstartArgs,
    registry: &RegistryArgs,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    if a.data.exists() {
        println!("using existing sample data {}", a.data.display());
    } else {
        run_generate(GenerateArgs {
            customers: a.customers,
            seed: 7,
            out: a.data.clone(),
            start: "2023-01-01".into(),
            days: 1095,
            force: false,
        })?;
    }
    let data = a.data.to_string_lossy().to_string();
    let url = &registry.registry;
    let log = load_log(&TransactionsArgs::new(data.as_str()), rt)?;
    let version = match reusable_version(url, &log, rt)? {
        Some(v) => {
            println!("reusing {v}: an earlier quickstart trained it on this very data (run fit to train anew)");
            v
        }
        None => {
            let fit = FitArgs::try_parse_from(["fit", "--transactions", &data, "--registry", url])?;
            run_fit(fit)?.context("the quickstart publishes a version")?
        }
    };
    promote_to_production(url, &version, rt)?;
    let example = a.data.with_file_name("example-request.json");
    let (example_id, example_as_of) = write_example(&log, &example)?;
    if a.state.state != "off" {
        load_sample_state(&log, &a.state, rt)?;
    }
    drop(log);
    if a.no_serve {
        return Ok(());
    }
    println!();
    println!(
        "serving on {} (Ctrl-C to stop). In another terminal:",
        a.listen
    );
    println!();
    println!(
        "  cargo run --release -- score --file {} --explain",
        example.display()
    );
    if a.state.state != "off" {
        println!(
            "  cargo run --release -- score --customer-id {example_id} --as-of {example_as_of}"
        );
    }
    println!();
    let config = super::serve::Cli::try_parse_from([
        "serve",
        "--listen",
        &a.listen,
        "--registry",
        url,
        "--metrics-listen",
        &a.metrics_listen,
        "--log",
        "warn",
        "--state",
        &a.state.state,
        "--state-lateness-secs",
        &a.state.state_lateness_secs.to_string(),
    ])?
    .config;
    rt.block_on(super::serve::run(config))
}

/// A version an earlier quickstart published from this very data (same bytes) with this
/// build's trainer: training again would publish the same recipe once more, 90 s later.
fn reusable_version(
    url: &str,
    log: &TransactionLog,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Option<String>> {
    let reg = Registry::open(url)?;
    if reg.missing_dir().is_some() {
        return Ok(None);
    }
    let listing = rt.block_on(reg.list_versions())?;
    Ok(listing
        .versions
        .into_iter()
        .find(|m| {
            m.data.sha256 == log.quality.sha256
                && m.trainer.version == env!("CARGO_PKG_VERSION")
                && m.trainer.args.iter().any(|a| a == "quickstart")
        })
        .map(|m| m.version))
}

fn promote_to_production(
    url: &str,
    version: &str,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let mv = crate::registry::Move {
        actor: super::admin::actor(None),
        reason: "quickstart".into(),
    };
    let r = rt.block_on(Registry::open(url)?.set_alias(
        "production",
        version,
        &crate::registry::Expect::Any,
        &mv,
    ));
    match r {
        Ok(r) => println!("production -> {} (move {})", r.version, r.seq),
        Err(crate::registry::RegistryError::Unchanged { .. }) => {
            println!("production -> {version} (already)")
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The sample data into the live state, for scoring by customer id.
fn load_sample_state(
    log: &TransactionLog,
    state: &StateArgs,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let (customers, events) = rt.block_on(super::state::load(log, state))?;
    println!(
        "live state: {events} transactions of {customers} customers in {}",
        state.state
    );
    Ok(())
}

/// A ready-to-send request: the history of the busiest of the ten customers whose ids sort
/// first (C0000001..C0000010 in the sample data), as of the last day of the log. That
/// customer and day.
fn write_example(log: &TransactionLog, out: &Path) -> anyhow::Result<(String, String)> {
    let mut order: Vec<usize> = (0..log.n_customers()).collect();
    order.sort_unstable_by(|&a, &b| log.ids[a].cmp(&log.ids[b]));
    let c = order
        .into_iter()
        .take(10)
        .max_by_key(|&c| (log.customer(c).len(), std::cmp::Reverse(c)))
        .context("the data has no customer")?;
    let history: Vec<serde_json::Value> = log
        .customer(c)
        .iter()
        .map(|r| {
            serde_json::json!({
                "time": crate::time::fmt_ts(r.ts),
                "amount": r.amount,
                "points_earned": r.points_earned,
                "points_redeemed": r.points_redeemed,
                "channel": log.channel_name(r),
            })
        })
        .collect();
    let as_of = crate::time::fmt_day(log.quality.last_ts);
    let id = log.ids[c].clone();
    let req = serde_json::json!({ "customer_id": id, "as_of": as_of, "history": history });
    std::fs::write(out, serde_json::to_string_pretty(&req)?)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok((id, as_of))
}

fn run_offline_score(a: OfflineScoreArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let registry = Registry::open(&a.registry.registry)?;
    let version = match &a.version {
        Some(v) => v.clone(),
        None => {
            let alias = &a.alias.alias;
            rt.block_on(registry.alias(alias))?
                .with_context(|| format!("alias {alias} does not exist; pass --version"))?
                .version
        }
    };
    let (manifest, bundle) = rt.block_on(registry.load(&version))?;
    let model = crate::scoring::Model::new(manifest, bundle)?;
    let log = load_log(&a.transactions, &rt)?;
    let file = File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut w = BufWriter::new(file);
    let counts = crate::trainer::batch::score_log(&log, &model, a.as_of, &mut w)?;
    w.flush()?;
    println!(
        "scored {} customers with {} into {} ({} without a purchase before --as-of skipped)",
        counts.scored,
        version,
        a.out.display(),
        counts.skipped
    );
    Ok(())
}

fn run_experiment_report(a: ExperimentReportArgs) -> anyhow::Result<()> {
    if a.bootstrap < 100 {
        anyhow::bail!("--bootstrap {}: use at least 100 resamples", a.bootstrap);
    }
    if !(0.5..1.0).contains(&a.confidence) {
        anyhow::bail!("--confidence {}: must be in [0.5, 1)", a.confidence);
    }
    let key = crate::exposure::CustomerKey::new(&a.exposure_key)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exposures = rt
        .block_on(crate::exposure::read_all(&a.exposures))
        .with_context(|| format!("reading exposures from {}", a.exposures))?;
    let log = load_log(&a.transactions, &rt)?;
    let opts = trainer::experiment::ReportOptions {
        bootstrap: a.bootstrap,
        confidence: a.confidence,
        ..Default::default()
    };
    let r = trainer::experiment::report(&exposures, &log, &key, a.experiment.as_deref(), &opts)?;
    if let Some(path) = &a.html {
        std::fs::write(path, crate::report::experiment::page(&r)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", trainer::experiment::render(&r));
    }
    Ok(())
}

fn truth_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or("sample".into(), |s| s.to_string_lossy().to_string());
    out.with_file_name(format!("{stem}.truth.csv"))
}

fn run_generate(a: GenerateArgs) -> anyhow::Result<()> {
    let start = parse_timestamp(&a.start)
        .with_context(|| format!("--start {:?} is not a date (YYYY-MM-DD)", a.start))?;
    if a.customers == 0 || a.days == 0 {
        bail!("--customers and --days must be at least 1");
    }
    // The default --out is the quickstart's data: regenerating it by accident would make the
    // registry's versions describe data that is gone.
    for p in [a.out.clone(), truth_path(&a.out)] {
        if p.exists() && !a.force {
            bail!(
                "{} exists; choose another --out, or pass --force to overwrite it",
                p.display()
            );
        }
    }
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let opts = GenerateOptions {
        customers: a.customers,
        seed: a.seed,
        start,
        days: a.days,
    };
    let pb = bar("simulating customers", a.customers as u64, false);
    let file = File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let (truth, n) = generate(&opts, &mut w, &|k| pb.inc(k))?;
    w.flush()?;
    pb.finish_and_clear();
    let tp = truth_path(&a.out);
    let mut tw =
        BufWriter::new(File::create(&tp).with_context(|| format!("creating {}", tp.display()))?);
    write_truth(&truth, &mut tw)?;
    tw.flush()?;
    println!(
        "wrote {n} transactions of {} customers to {} and their ground truth to {}",
        a.customers,
        a.out.display(),
        tp.display()
    );
    Ok(())
}

/// Reads a transaction log from a path or URL, with a progress bar.
pub(crate) fn load_log(
    t: &TransactionsArgs,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<trainer::TransactionLog> {
    let src = t.transactions.as_str();
    let (reader, len) = open_transactions(src, rt)?;
    let pb = bar("reading transactions", len, true);
    let pb2 = pb.clone();
    let log =
        trainer::load_transactions(reader, src, &t.load_options(), move |b| pb2.set_position(b))?;
    pb.finish_and_clear();
    Ok(log)
}

/// Opens the transactions: a local file streams; an object-store URL is fetched whole.
fn open_transactions(
    src: &str,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<(Box<dyn Read>, u64)> {
    let local = |p: &Path| -> anyhow::Result<(Box<dyn Read>, u64)> {
        let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        Ok((Box::new(std::io::BufReader::with_capacity(1 << 20, f)), len))
    };
    match src.split_once("://") {
        None => local(Path::new(src)),
        Some(("file", _)) => {
            let url = url::Url::parse(src).with_context(|| format!("{src:?} is not a URL"))?;
            let p = url
                .to_file_path()
                .map_err(|_| anyhow::anyhow!("{src:?} is not an absolute file URL"))?;
            local(&p)
        }
        Some(_) => {
            let (store, key) = open_store(src)?;
            let bytes = rt
                .block_on(async { store.get(&key).await?.bytes().await })
                .with_context(|| format!("fetching {src}"))?;
            let len = bytes.len() as u64;
            Ok((Box::new(std::io::Cursor::new(bytes)), len))
        }
    }
}

/// Trains and, unless a dry run, publishes; returns the published version. With `--json`
/// the summaries go to stderr and stdout holds one JSON object, for scripts.
pub fn run_fit(a: FitArgs) -> anyhow::Result<Option<String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Open the registry first: a bad URL should fail before minutes of training.
    let registry = Registry::open(&a.registry.registry)?;
    let mut opts = fit_options(&a)?;
    // Where the alias points now, read before training: the promotion below must not undo a
    // move someone made during the fit.
    let promote_from = a
        .promote
        .as_ref()
        .map(|alias| expect_now(&registry, alias, &rt))
        .transpose()?;
    let against = against(&a, &registry, &rt)?;
    opts.compare = against.as_ref().map(|x| (x.bundle.clone(), x.data_end));
    let mut say: Box<dyn Write> = match a.json {
        true => Box::new(std::io::stderr()),
        false => Box::new(std::io::stdout()),
    };
    let log = load_log(&a.transactions, &rt)?;
    write!(say, "{}", report::data_quality(&log.quality))?;
    let run = RunInfo {
        args: std::env::args().collect(),
        created_at: chrono::Utc::now(),
    };
    let trained = match trainer::train(&log, &opts, &run, &Bars) {
        Err(TrainError::NotBetter(m)) => {
            writeln!(say, "{}", report::metrics_table(&m))?;
            return Err(TrainError::NotBetter(m).into());
        }
        other => other?,
    };
    drop(log);
    let compared = trained.compared.clone();
    let (manifest, files) = trained.into_artifact()?;
    writeln!(say)?;
    write!(say, "{}", report::version_summary(&manifest))?;
    if !manifest.beats_baselines {
        writeln!(
            say,
            "warning: published with --force although the models do not beat their baselines"
        )?;
    }
    let may_promote = match (&against, &compared) {
        (Some(x), Some(c)) => gate(&a, c, x, &mut say)?,
        _ => true,
    };
    let version = manifest.version.clone();
    publish(&a, &registry, &rt, (&manifest, &files), &mut say)?;
    let promoted = match (&a.promote, &promote_from) {
        (Some(alias), Some(expect)) if !a.dry_run && may_promote => {
            let mv = super::admin::mv(a.who.clone());
            rt.block_on(registry.set_alias(alias, &version, expect, &mv))?;
            writeln!(say, "{alias} now points at {version}")?;
            Some(alias.clone())
        }
        _ => None,
    };
    if a.json {
        let out = serde_json::json!({
            "version": version,
            "published": !a.dry_run,
            "registry": registry.url(),
            "beats_baselines": manifest.beats_baselines,
            "promoted": promoted,
            "metrics": manifest.metrics,
            "compared": compared,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok((!a.dry_run).then_some(version))
}

/// Publishes the version, unless a dry run.
fn publish(
    a: &FitArgs,
    registry: &Registry,
    rt: &tokio::runtime::Runtime,
    (manifest, files): (&crate::model::Manifest, &[trainer::fit::ArtifactFile]),
    say: &mut dyn Write,
) -> anyhow::Result<()> {
    let version = &manifest.version;
    if a.dry_run {
        writeln!(
            say,
            "dry run: nothing published (version would be {version})"
        )?;
    } else {
        rt.block_on(registry.publish(manifest, files))?;
        writeln!(say, "published version {version} to {}", registry.url())?;
    }
    Ok(())
}

/// Where an alias points now, as the expectation of a compare-and-swap.
fn expect_now(
    registry: &Registry,
    alias: &str,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Expect> {
    Ok(match rt.block_on(registry.alias(alias))? {
        Some(r) => Expect::Version(r.version),
        None => Expect::Absent,
    })
}

/// The version `--compare-alias` or `--gate-alias` names.
struct Against {
    alias: String,
    version: String,
    bundle: std::sync::Arc<crate::model::ModelBundle>,
    /// Its last purchase: candidate rows from here on are ones it never saw.
    data_end: i64,
}

/// Loads the version to compare with before training: a bad alias, or a version this build
/// cannot compare, fails now rather than after minutes of training.
fn against(
    a: &FitArgs,
    registry: &Registry,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Option<Against>> {
    let Some(alias) = a.gate_alias.as_ref().or(a.compare_alias.as_ref()) else {
        return Ok(None);
    };
    let Some(record) = rt.block_on(registry.alias(alias))? else {
        eprintln!("note: alias {alias} does not exist yet: nothing to compare with");
        return Ok(None);
    };
    let v = &record.version;
    let (manifest, bundle) = rt.block_on(registry.load(v))?;
    if bundle.schema != crate::features::FeatureSchema::current() {
        anyhow::bail!(
            "{alias} ({v}) uses feature schema {}, this build {}: its forests cannot read these rows",
            bundle.schema.version,
            crate::features::SCHEMA_VERSION
        );
    }
    if bundle.horizon_days != a.horizon_days {
        anyhow::bail!(
            "{alias} ({v}) predicts {} days ahead, the candidate {}: their figures are not comparable (--horizon-days)",
            bundle.horizon_days,
            a.horizon_days
        );
    }
    let data_end = crate::time::parse_timestamp(&manifest.data.last_purchase).ok_or_else(|| {
        anyhow::anyhow!(
            "{alias} ({v}): its manifest's last purchase {:?} is no timestamp",
            manifest.data.last_purchase
        )
    })?;
    Ok(Some(Against {
        alias: alias.clone(),
        version: v.clone(),
        bundle: std::sync::Arc::new(bundle),
        data_end,
    }))
}

/// Prints the comparison; then, with `--gate-alias`, an error (nothing published) when the
/// candidate is worse than the alias's version by more than the margin; `Ok(false)` (publish, do not promote) when
/// there were no rows to compare on.
fn gate(
    a: &FitArgs,
    c: &trainer::evaluate::Comparison,
    x: &Against,
    say: &mut dyn Write,
) -> anyhow::Result<bool> {
    use trainer::evaluate::Comparison;
    write!(say, "{}", report::comparison(c, &x.alias, &x.version))?;
    if a.gate_alias.is_none() {
        return Ok(true);
    }
    let (alias, v, margin) = (&x.alias, &x.version, a.gate_margin);
    let c = match c {
        Comparison::NoFairRows { .. } => {
            writeln!(say, "gate: nothing to compare on yet, so the candidate is published but {alias} is not moved")?;
            return Ok(false);
        }
        Comparison::Compared(c) => c,
    };
    let auc = (c.candidate.churn.roc_auc, c.other.churn.roc_auc);
    let rho = (c.candidate.clv.spearman, c.other.clv.spearman);
    if auc.0 < auc.1 - margin || rho.0 < rho.1 - margin {
        anyhow::bail!(
            "gate: the candidate is worse than {alias} ({v}) on the {} validation rows after its data ended \
             (churn ROC-AUC {:.4} vs {:.4}, CLV Spearman {:.4} vs {:.4}, margin {margin}); nothing published",
            c.rows, auc.0, auc.1, rho.0, rho.1
        );
    }
    writeln!(
        say,
        "gate: the candidate is no worse than {alias} ({v}) (margin {margin})"
    )?;
    Ok(true)
}

/// The training options the flags ask for, checked before minutes of training.
fn fit_options(a: &FitArgs) -> anyhow::Result<FitOptions> {
    let defaults = FitOptions::default();
    let opts = FitOptions {
        split: SplitOptions {
            horizon_days: a.horizon_days,
            as_of: a.as_of,
            max_snapshots: a.train_snapshots.max(1),
            stride_days: a.snapshot_stride_days.max(1),
            max_quarters: a.validation_quarters,
            ..defaults.split
        },
        lookback_days: a.lookback_days,
        n_trees: a.trees.max(1),
        mtry: a.mtry,
        seed: a.seed,
        churn: Overrides {
            max_depth: a.churn_max_depth.map(|d| d.0),
            min_samples_leaf: a.churn_min_samples_leaf,
        },
        clv: Overrides {
            max_depth: a.clv_max_depth.map(|d| d.0),
            min_samples_leaf: a.clv_min_samples_leaf,
        },
        max_train_rows: a.max_train_rows.max(100),
        max_validation_rows: a.max_validation_rows.max(100),
        calibration: a.calibration,
        segments: a.segments.rules(),
        value_high: a.segments.segment_value_high,
        threads: a.threads.unwrap_or(defaults.threads),
        force: a.force,
        ..defaults
    };
    // value_high is learnt when not given; the rest is checked now.
    opts.segments
        .validate()
        .map_err(|e| anyhow::anyhow!("segment thresholds: {e}"))?;
    Ok(opts)
}

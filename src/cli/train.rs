//! Flags and output of `loyalscore-train`.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use object_store::ObjectStoreExt;

use crate::model::BUNDLE_FILE;
use crate::registry::{open_store, Registry};
use crate::trainer::generate::{generate, write_truth, GenerateOptions};
use crate::trainer::time::{parse_as_of, parse_timestamp};
use crate::trainer::{self, report, FitOptions, LoadOptions, Overrides, RunInfo, TrainError};

use super::progress::{bar, Bars};

#[derive(Parser, Debug)]
#[command(
    name = "loyalscore-train",
    version,
    about = "Train, evaluate and publish loyalscore models"
)]
pub struct Cli {
    /// Log filter (tracing's EnvFilter syntax); logs go to stderr.
    #[arg(long, env = "LOYALSCORE_LOG", default_value = "warn", global = true)]
    pub log: String,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Write a deterministic synthetic transaction log and its ground truth.
    Generate(GenerateArgs),
    /// Train both forests, evaluate them against baselines, publish a version.
    Fit(FitArgs),
    /// Generate the sample data (unless present) and train on it into the registry.
    Quickstart(QuickstartArgs),
}

#[derive(Args, Debug)]
pub struct QuickstartArgs {
    /// Sample data to use, generated first if missing.
    #[arg(long, default_value = "data/sample.csv")]
    pub data: PathBuf,
    #[arg(long, default_value_t = 50_000)]
    pub customers: usize,
    #[arg(long, env = "LOYALSCORE_REGISTRY", default_value = "models")]
    pub registry: String,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[arg(long, default_value_t = 50_000)]
    pub customers: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Output CSV; the ground truth goes beside it as NAME.truth.csv.
    #[arg(long, default_value = "data/sample.csv")]
    pub out: PathBuf,
    /// First day of the log.
    #[arg(long, default_value = "2023-01-01")]
    pub start: String,
    /// Length of the log in days.
    #[arg(long, default_value_t = 1095)]
    pub days: u32,
}

#[derive(Args, Debug)]
pub struct FitArgs {
    /// Transaction CSV: a path, or an object-store URL (s3://, gs://, az://, file://).
    #[arg(long)]
    pub transactions: String,
    /// Registry: a path or URL (file://, s3://bucket/prefix, gs://, az://).
    #[arg(long, env = "LOYALSCORE_REGISTRY", default_value = "models")]
    pub registry: String,
    /// Validation snapshot: YYYY-MM-DD (end of that day) or RFC 3339. Default: end of data
    /// minus the horizon.
    #[arg(long)]
    pub as_of: Option<String>,
    /// Churn = no purchase within this many days; CLV = spend within them.
    #[arg(long, default_value_t = 180)]
    pub horizon_days: u32,
    /// Customers count at a snapshot if they bought within this many days before it.
    #[arg(long, default_value_t = 365)]
    pub lookback_days: u32,
    /// Most earlier snapshots stacked for training in an out-of-time split.
    #[arg(long, default_value_t = 3)]
    pub train_snapshots: usize,
    /// Trees per forest.
    #[arg(long, default_value_t = 100)]
    pub trees: usize,
    /// Churn forest depth in levels (root = 1), or "none"; default: chosen on a grid.
    #[arg(long, value_parser = parse_depth)]
    pub churn_max_depth: Option<Depth>,
    /// Churn forest minimum samples per leaf; default: chosen on a grid.
    #[arg(long)]
    pub churn_min_samples_leaf: Option<usize>,
    /// CLV forest depth in levels, or "none"; default: chosen on a grid.
    #[arg(long, value_parser = parse_depth)]
    pub clv_max_depth: Option<Depth>,
    /// CLV forest minimum samples per leaf; default: chosen on a grid.
    #[arg(long)]
    pub clv_min_samples_leaf: Option<usize>,
    /// Features tried per split (default: square root of the feature count).
    #[arg(long)]
    pub mtry: Option<usize>,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Training rows are sampled down to about this many.
    #[arg(long, default_value_t = 400_000)]
    pub max_train_rows: usize,
    /// Stop when more than this share of rows is bad.
    #[arg(long, default_value_t = 0.01)]
    pub max_bad_share: f64,
    /// Threads for fitting (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Train and evaluate, publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Publish even if the models do not beat their baselines.
    #[arg(long)]
    pub force: bool,
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
        Cmd::Fit(a) => run_fit(a),
        Cmd::Quickstart(a) => run_quickstart(a),
    }
}

fn run_quickstart(a: QuickstartArgs) -> anyhow::Result<()> {
    if a.data.exists() {
        println!("using existing sample data {}", a.data.display());
    } else {
        run_generate(GenerateArgs {
            customers: a.customers,
            seed: 7,
            out: a.data.clone(),
            start: "2023-01-01".into(),
            days: 1095,
        })?;
    }
    let data = a.data.to_string_lossy().to_string();
    let fit = Cli::try_parse_from([
        "loyalscore-train",
        "fit",
        "--transactions",
        &data,
        "--registry",
        &a.registry,
    ])?;
    match fit.cmd {
        Cmd::Fit(f) => run_fit(f),
        _ => unreachable!("parsed a fit command"),
    }
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

fn run_fit(a: FitArgs) -> anyhow::Result<()> {
    let as_of = match &a.as_of {
        Some(s) => Some(parse_as_of(s).with_context(|| {
            format!("--as-of {s:?} is neither YYYY-MM-DD nor an RFC 3339 timestamp")
        })?),
        None => None,
    };
    if !(0.0..=1.0).contains(&a.max_bad_share) {
        bail!(
            "--max-bad-share must be between 0 and 1, got {}",
            a.max_bad_share
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Open the registry first: a bad URL should fail before minutes of training.
    let registry = Registry::open(&a.registry)?;

    let (reader, len) = open_transactions(&a.transactions, &rt)?;
    let pb = bar("reading transactions", len, true);
    let pb2 = pb.clone();
    let log = trainer::load_transactions(
        reader,
        &a.transactions,
        &LoadOptions {
            max_bad_share: a.max_bad_share,
        },
        move |b| pb2.set_position(b),
    )?;
    pb.finish_and_clear();
    print!("{}", report::data_quality(&log.quality));

    let opts = FitOptions {
        horizon_days: a.horizon_days,
        as_of,
        lookback_days: a.lookback_days,
        train_snapshots: a.train_snapshots,
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
        threads: a.threads.unwrap_or_else(|| FitOptions::default().threads),
        force: a.force,
        ..FitOptions::default()
    };
    let run = RunInfo {
        args: std::env::args().collect(),
        created_at: chrono::Utc::now(),
    };
    let trained = match trainer::train(&log, &opts, &run, &Bars) {
        Err(TrainError::NotBetter(m)) => {
            println!("{}", report::metrics_table(&m));
            return Err(TrainError::NotBetter(m).into());
        }
        other => other?,
    };
    drop(log);
    println!();
    print!("{}", report::version_summary(&trained.manifest));
    if !trained.manifest.beats_baselines {
        println!("warning: published with --force although the models do not beat their baselines");
    }
    if a.dry_run {
        println!(
            "dry run: nothing published (version would be {})",
            trained.manifest.version
        );
        return Ok(());
    }
    let files = [(BUNDLE_FILE, Bytes::from(trained.bundle_bytes))];
    rt.block_on(registry.publish(&trained.manifest, &files))?;
    println!(
        "published version {} to {}",
        trained.manifest.version,
        registry.url()
    );
    Ok(())
}

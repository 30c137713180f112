//! The training run: split, features, hyper-parameter choice, forests, honest evaluation
//! against baselines, and the artifact (bundle + manifest) ready to publish.

use crate::features::{FeatureSchema, DAY};
use crate::forest::{fit_forest, FlatForest, ForestParams, TrainingMatrix};
use crate::model::{
    sha256_hex, DataLineage, FileEntry, GridPoint, Hyperparameters, Manifest, Metrics, ModelBundle,
    SegmentThresholds, SplitInfo, TrainerInfo, BUNDLE_FILE,
};

use super::dataset::{build_rows, in_share, stable_hash, Rows};
use super::eval::{churn_metrics, clv_metrics, roc_auc, spearman};
use super::load::TransactionLog;
use super::{Progress, TrainError};
use crate::time::{fmt_day, fmt_ts};

/// Overrides for one forest's regularisation; `None` lets the grid choose.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `Some(None)` means unlimited depth.
    pub max_depth: Option<Option<u16>>,
    pub min_samples_leaf: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct FitOptions {
    pub horizon_days: u32,
    /// The validation snapshot; default: end of data minus the horizon.
    pub as_of: Option<i64>,
    pub lookback_days: u32,
    /// Most training snapshots stacked for out-of-time validation.
    pub train_snapshots: usize,
    /// History a training snapshot needs before it, in days.
    pub min_history_days: u32,
    /// Share of customers held out when the data cannot span an out-of-time split.
    pub holdout_share: f64,
    pub n_trees: usize,
    pub mtry: Option<usize>,
    pub seed: u64,
    pub churn: Overrides,
    pub clv: Overrides,
    pub grid_trees: usize,
    pub grid_max_rows: usize,
    pub max_train_rows: usize,
    pub threads: usize,
    pub force: bool,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            horizon_days: 180,
            as_of: None,
            lookback_days: 365,
            train_snapshots: 3,
            min_history_days: 90,
            holdout_share: 0.2,
            n_trees: 100,
            mtry: None,
            seed: 7,
            churn: Overrides::default(),
            clv: Overrides::default(),
            grid_trees: 30,
            grid_max_rows: 60_000,
            max_train_rows: 400_000,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            force: false,
        }
    }
}

/// Where the data came from and how the trainer was called, for the manifest.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub args: Vec<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A trained, evaluated version, not yet published.
#[derive(Debug)]
pub struct Trained {
    pub manifest: Manifest,
    pub bundle: ModelBundle,
    pub bundle_bytes: Vec<u8>,
}

/// How validation is done.
#[derive(Debug, Clone, PartialEq)]
pub enum Split {
    /// Train on earlier snapshots, validate on a later one, refit shifted by one horizon.
    OutOfTime {
        train: Vec<i64>,
        validation: i64,
        refit: Vec<i64>,
    },
    /// The data is too short: one snapshot, customers split by a hash of their id.
    Holdout { snapshot: i64 },
}

impl Split {
    pub fn method(&self) -> &'static str {
        match self {
            Split::OutOfTime { .. } => "out_of_time",
            Split::Holdout { .. } => "customer_hash_holdout",
        }
    }

    pub fn validation(&self) -> i64 {
        match self {
            Split::OutOfTime { validation, .. } => *validation,
            Split::Holdout { snapshot } => *snapshot,
        }
    }

    /// The snapshots the evaluated forests were fitted on.
    pub fn train_snapshots(&self) -> Vec<i64> {
        match self {
            Split::OutOfTime { train, .. } => train.clone(),
            Split::Holdout { snapshot } => vec![*snapshot],
        }
    }

    /// The snapshots the published forests are refitted on: the latest labelled ones.
    pub fn refit_snapshots(&self) -> Vec<i64> {
        match self {
            Split::OutOfTime { refit, .. } => refit.clone(),
            Split::Holdout { snapshot } => vec![*snapshot],
        }
    }
}

/// Chooses the split for data from `first_ts` to `last_ts`.
pub fn plan_split(first_ts: i64, last_ts: i64, opts: &FitOptions) -> Result<Split, TrainError> {
    let start = first_ts.div_euclid(DAY) * DAY;
    let end = (last_ts.div_euclid(DAY) + 1) * DAY;
    let h = i64::from(opts.horizon_days) * DAY;
    if opts.horizon_days == 0 {
        return Err(TrainError::Split(
            "--horizon-days must be at least 1".into(),
        ));
    }
    let v = opts.as_of.unwrap_or(end - h);
    if v + h > end {
        return Err(TrainError::Split(format!(
            "--as-of {} leaves {} days of data after it, but --horizon-days is {}: labels need the whole horizon (the data ends {})",
            fmt_ts(v),
            (end - v).max(0) / DAY,
            opts.horizon_days,
            fmt_day(last_ts)
        )));
    }
    if v <= start + DAY {
        return Err(TrainError::Split(format!(
            "the validation snapshot {} leaves no history before it (the data starts {}); a horizon of {} days needs more than {} days of data",
            fmt_ts(v),
            fmt_day(first_ts),
            opts.horizon_days,
            opts.horizon_days
        )));
    }
    let min_history = i64::from(opts.min_history_days) * DAY;
    let train: Vec<i64> = (1..=opts.train_snapshots as i64)
        .map(|k| v - k * h)
        .take_while(|t| t - start >= min_history)
        .collect();
    if train.is_empty() {
        return Ok(Split::Holdout { snapshot: v });
    }
    let refit = train.iter().map(|t| t + h).collect();
    Ok(Split::OutOfTime {
        train,
        validation: v,
        refit,
    })
}

fn ascending(mut v: Vec<i64>) -> Vec<i64> {
    v.sort_unstable();
    v
}

/// Keeps about `max` rows, chosen by a hash of customer and snapshot (so reruns agree).
fn cap_rows(rows: Rows, max: usize, log: &TransactionLog, salt: &str) -> Rows {
    if rows.len() <= max {
        return rows;
    }
    let share = max as f64 / rows.len() as f64;
    let keep: Vec<usize> = (0..rows.len())
        .filter(|&i| {
            let key = format!("{}#{}", log.ids[rows.cust[i] as usize], rows.snapshot[i]);
            in_share(stable_hash(salt, &key), share)
        })
        .collect();
    rows.select(&keep)
}

/// Rows whose customer falls in (or out of) a hashed share.
fn split_by_customer(rows: &Rows, log: &TransactionLog, salt: &str, share: f64) -> (Rows, Rows) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..rows.len() {
        if in_share(stable_hash(salt, &log.ids[rows.cust[i] as usize]), share) {
            a.push(i);
        } else {
            b.push(i);
        }
    }
    (rows.select(&a), rows.select(&b))
}

fn params_for(base: &ForestParams, o: &Overrides, depth: Option<u16>, leaf: usize) -> ForestParams {
    ForestParams {
        max_depth: o.max_depth.unwrap_or(depth),
        min_samples_leaf: o.min_samples_leaf.unwrap_or(leaf),
        ..base.clone()
    }
}

const GRID_DEPTHS: [Option<u16>; 3] = [Some(8), Some(12), Some(16)];
const GRID_LEAVES: [usize; 3] = [5, 20, 50];

/// The (depth, leaf) points to try for one forest: the flags' values, or the grid.
fn grid_points(o: &Overrides) -> Vec<(Option<u16>, usize)> {
    let depths: Vec<Option<u16>> = match o.max_depth {
        Some(d) => vec![d],
        None => GRID_DEPTHS.to_vec(),
    };
    let leaves: Vec<usize> = match o.min_samples_leaf {
        Some(l) => vec![l],
        None => GRID_LEAVES.to_vec(),
    };
    depths
        .iter()
        .flat_map(|&d| leaves.iter().map(move |&l| (d, l)))
        .collect()
}

/// Picks max_depth and min_samples_leaf for both forests on an inner split of the training
/// rows (never on the validation rows, whose metrics must stay honest).
fn grid_search(
    train: &Rows,
    log: &TransactionLog,
    opts: &FitOptions,
    base: &ForestParams,
    progress: &dyn Progress,
) -> Result<(ForestParams, ForestParams, Vec<GridPoint>), TrainError> {
    let (churn_pts, clv_pts) = (grid_points(&opts.churn), grid_points(&opts.clv));
    let chosen = |(d, l): (Option<u16>, usize), (cd, cl): (Option<u16>, usize), grid| {
        Ok((
            params_for(base, &opts.churn, d, l),
            params_for(base, &opts.clv, cd, cl),
            grid,
        ))
    };
    if churn_pts.len() == 1 && clv_pts.len() == 1 {
        return chosen(churn_pts[0], clv_pts[0], Vec::new());
    }
    let (inner_val, inner_train) = split_by_customer(train, log, "grid", 0.25);
    let inner_train = cap_rows(inner_train, opts.grid_max_rows, log, "grid-rows");
    let inner_val = cap_rows(inner_val, opts.grid_max_rows / 2, log, "grid-rows");
    if inner_train.is_empty() || inner_val.is_empty() {
        return chosen(
            churn_pts[churn_pts.len() / 2],
            clv_pts[clv_pts.len() / 2],
            Vec::new(),
        );
    }
    let small = ForestParams {
        n_trees: opts.grid_trees.max(1),
        ..base.clone()
    };
    let total = (churn_pts.len() + clv_pts.len()) * small.n_trees;
    let mut search = Grid {
        x: TrainingMatrix::new(&inner_train.x)?,
        val: &inner_val,
        small,
        threads: opts.threads,
        tick: progress.start("choosing depth and leaf size", total as u64),
        points: Vec::new(),
    };
    let best_churn = search.best(
        ("churn", "roc_auc"),
        &churn_pts,
        &opts.churn,
        &inner_train.churn_target(),
        &|p| roc_auc(p, &inner_val.churned),
    )?;
    let best_clv = search.best(
        ("clv", "spearman"),
        &clv_pts,
        &opts.clv,
        &inner_train.spend_next,
        &|p| spearman(p, &inner_val.spend_next),
    )?;
    chosen(best_churn, best_clv, search.points)
}

/// One grid search: small forests fitted on the inner training rows, scored on the inner
/// validation rows, every point recorded.
struct Grid<'a> {
    x: TrainingMatrix,
    val: &'a Rows,
    small: ForestParams,
    threads: usize,
    tick: Box<dyn super::Tick + 'a>,
    points: Vec<GridPoint>,
}

impl Grid<'_> {
    /// The best-scoring point for one forest (`model`, scored by `metric`).
    fn best(
        &mut self,
        (model, metric): (&str, &str),
        pts: &[(Option<u16>, usize)],
        o: &Overrides,
        y: &[f64],
        score_of: &dyn Fn(&[f64]) -> f64,
    ) -> Result<(Option<u16>, usize), TrainError> {
        let mut best = (f64::NEG_INFINITY, pts[0]);
        for &(d, l) in pts {
            let p = params_for(&self.small, o, d, l);
            let tick = &self.tick;
            let f = fit_forest(&self.x, y, &p, self.threads, &|n| tick.inc(n as u64))?;
            let score = score_of(&f.predict(&self.val.x));
            self.points.push(GridPoint {
                model: model.into(),
                max_depth: d,
                min_samples_leaf: l,
                metric: metric.into(),
                score,
            });
            if score > best.0 {
                best = (score, (d, l));
            }
        }
        Ok(best.1)
    }
}

/// Fits the churn and CLV forests on the same rows.
fn fit_pair(
    rows: &Rows,
    churn: &ForestParams,
    clv: &ForestParams,
    opts: &FitOptions,
    label: &str,
    progress: &dyn Progress,
) -> Result<(FlatForest, FlatForest), TrainError> {
    let tm = TrainingMatrix::new(&rows.x)?;
    let tick = progress.start(label, (churn.n_trees + clv.n_trees) as u64);
    let c = fit_forest(&tm, &rows.churn_target(), churn, opts.threads, &|n| {
        tick.inc(n as u64)
    })?;
    let v = fit_forest(&tm, &rows.spend_next, clv, opts.threads, &|n| {
        tick.inc(n as u64)
    })?;
    Ok((c, v))
}

/// The 90-day rule, made a probability: the churn rate of its two groups on the training rows.
fn ninety_day_rule(train: &Rows) -> impl Fn(f64) -> f64 {
    let r = train.feature("recency_days");
    let rate = |flagged: bool| {
        let (mut n, mut c) = (0.0, 0.0);
        for (i, &rd) in r.iter().enumerate() {
            if (rd > 90.0) == flagged {
                n += 1.0;
                c += f64::from(u8::from(train.churned[i]));
            }
        }
        (n > 0.0).then(|| c / n)
    };
    let overall = train.churned.iter().filter(|&&c| c).count() as f64 / train.len().max(1) as f64;
    let (p1, p0) = (
        rate(true).unwrap_or(overall),
        rate(false).unwrap_or(overall),
    );
    move |rd: f64| if rd > 90.0 { p1 } else { p0 }
}

/// Runs the whole training: returns the version, or refuses if the models do not beat their
/// baselines and `force` is off.
pub fn train(
    log: &TransactionLog,
    opts: &FitOptions,
    run: &RunInfo,
    progress: &dyn Progress,
) -> Result<Trained, TrainError> {
    let split = plan_split(log.quality.first_ts, log.quality.last_ts, opts)?;
    let base = ForestParams {
        n_trees: opts.n_trees,
        mtry: opts.mtry,
        seed: opts.seed,
        ..ForestParams::default()
    };
    let (train_rows, val_rows) = split_rows(log, &split, opts, progress)?;
    let (churn_p, clv_p, grid) = grid_search(&train_rows, log, opts, &base, progress)?;
    let (churn_f, clv_f) = fit_pair(
        &train_rows,
        &churn_p,
        &clv_p,
        opts,
        "fitting forests",
        progress,
    )?;
    let (metrics, segments) = evaluate(&churn_f, &clv_f, &train_rows, &val_rows);
    let beats = beats_baselines(&metrics);
    if !beats && !opts.force {
        return Err(TrainError::NotBetter(Box::new(metrics)));
    }
    let rows = [train_rows.len(), val_rows.len()];
    drop(train_rows);

    // The artifact: the same recipe refitted on the latest labelled data.
    let refit_rows = rows_at(
        log,
        &split.refit_snapshots(),
        opts,
        &|_| true,
        "building refit features",
        progress,
    )?;
    let refit_rows = cap_rows(refit_rows, opts.max_train_rows, log, "refit-rows");
    let (churn, clv) = fit_pair(
        &refit_rows,
        &churn_p,
        &clv_p,
        opts,
        "refitting on the latest data",
        progress,
    )?;
    let bundle = ModelBundle {
        schema: FeatureSchema::current(),
        horizon_days: opts.horizon_days,
        churn,
        clv,
        segments,
    };
    let bundle_bytes = bundle.encode()?;
    let facts = Facts {
        split: &split,
        rows: [rows[0], rows[1], refit_rows.len()],
        hyperparameters: Hyperparameters {
            churn: churn_p,
            clv: clv_p,
            selected_by: if grid.is_empty() { "flags" } else { "grid" }.into(),
            grid,
        },
        metrics,
        beats,
    };
    let manifest = manifest(log, opts, run, &bundle, &bundle_bytes, facts);
    Ok(Trained {
        manifest,
        bundle,
        bundle_bytes,
    })
}

/// Rows of the customers `include` accepts at the snapshots, sorted ascending.
fn rows_at(
    log: &TransactionLog,
    snapshots: &[i64],
    opts: &FitOptions,
    include: &dyn Fn(usize) -> bool,
    label: &str,
    progress: &dyn Progress,
) -> Result<Rows, TrainError> {
    let tick = progress.start(label, log.n_customers() as u64);
    let h = i64::from(opts.horizon_days) * DAY;
    let lookback = i64::from(opts.lookback_days) * DAY;
    Ok(build_rows(
        log,
        &ascending(snapshots.to_vec()),
        h,
        lookback,
        include,
        tick.as_ref(),
    )?)
}

/// Training and validation rows: earlier snapshots and a later one, or, for a holdout, the
/// same snapshot split by customer. Training rows are capped at `max_train_rows`.
fn split_rows(
    log: &TransactionLog,
    split: &Split,
    opts: &FitOptions,
    progress: &dyn Progress,
) -> Result<(Rows, Rows), TrainError> {
    let held_out = |c: usize| in_share(stable_hash("holdout", &log.ids[c]), opts.holdout_share);
    let label = "building features";
    let (train, val) = match split {
        Split::OutOfTime {
            train, validation, ..
        } => (
            rows_at(log, train, opts, &|_| true, label, progress)?,
            rows_at(log, &[*validation], opts, &|_| true, label, progress)?,
        ),
        Split::Holdout { snapshot } => (
            rows_at(log, &[*snapshot], opts, &|c| !held_out(c), label, progress)?,
            rows_at(log, &[*snapshot], opts, &held_out, label, progress)?,
        ),
    };
    if train.len() < 50 || val.len() < 20 {
        return Err(TrainError::Split(format!(
            "too few customers to train and validate: {} training rows, {} validation rows",
            train.len(),
            val.len()
        )));
    }
    Ok((cap_rows(train, opts.max_train_rows, log, "train-rows"), val))
}

/// Both models and both baselines on exactly the same validation rows, and the segment
/// thresholds from the validation predictions.
fn evaluate(
    churn: &FlatForest,
    clv: &FlatForest,
    train_rows: &Rows,
    val_rows: &Rows,
) -> (Metrics, SegmentThresholds) {
    let churn_pred = churn.predict(&val_rows.x);
    let clv_pred = clv.predict(&val_rows.x);
    let rule = ninety_day_rule(train_rows);
    let base_pred: Vec<f64> = val_rows
        .feature("recency_days")
        .into_iter()
        .map(&rule)
        .collect();
    let metrics = Metrics {
        churn: churn_metrics(&churn_pred, &val_rows.churned),
        churn_baseline: churn_metrics(&base_pred, &val_rows.churned),
        clv: clv_metrics(&clv_pred, &val_rows.spend_next),
        clv_baseline: clv_metrics(&val_rows.spend_prev, &val_rows.spend_next),
    };
    let segments = SegmentThresholds::from_population(
        &churn_pred,
        &clv_pred,
        &val_rows.feature("spend_trend"),
    );
    (metrics, segments)
}

/// What the training found, for the manifest.
struct Facts<'a> {
    split: &'a Split,
    /// Training, validation and refit rows.
    rows: [usize; 3],
    hyperparameters: Hyperparameters,
    metrics: Metrics,
    beats: bool,
}

fn manifest(
    log: &TransactionLog,
    opts: &FitOptions,
    run: &RunInfo,
    bundle: &ModelBundle,
    bundle_bytes: &[u8],
    facts: Facts,
) -> Manifest {
    let q = &log.quality;
    let sha = sha256_hex(bundle_bytes);
    let version = format!("v{}-{}", run.created_at.format("%Y%m%d-%H%M%S"), &sha[..6]);
    let split = facts.split;
    let fmt_all = |ts: Vec<i64>| ts.iter().map(|&t| fmt_ts(t)).collect();
    Manifest {
        format: 1,
        version,
        created_at: run
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        trainer: TrainerInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: option_env!("LOYALSCORE_GIT_COMMIT")
                .filter(|c| !c.is_empty())
                .map(str::to_string),
            args: run.args.clone(),
        },
        data: DataLineage {
            source: q.source.clone(),
            sha256: q.sha256.clone(),
            rows_read: q.rows_read,
            rows_rejected: q.rows_rejected(),
            rows_duplicate: q.duplicates,
            customers: q.customers,
            first_purchase: fmt_ts(q.first_ts),
            last_purchase: fmt_ts(q.last_ts),
        },
        split: SplitInfo {
            method: split.method().into(),
            validation_as_of: fmt_ts(split.validation()),
            horizon_days: opts.horizon_days,
            lookback_days: opts.lookback_days,
            train_snapshots: fmt_all(split.train_snapshots()),
            refit_snapshots: fmt_all(split.refit_snapshots()),
            train_rows: facts.rows[0] as u64,
            validation_rows: facts.rows[1] as u64,
            refit_rows: facts.rows[2] as u64,
        },
        hyperparameters: facts.hyperparameters,
        feature_schema: FeatureSchema::current(),
        metrics: facts.metrics,
        beats_baselines: facts.beats,
        forced: !facts.beats,
        segments: bundle.segments.clone(),
        files: vec![FileEntry {
            name: BUNDLE_FILE.into(),
            sha256: sha,
            bytes: bundle_bytes.len() as u64,
        }],
    }
}

/// The publishing gate: better ranking than both baselines.
pub fn beats_baselines(m: &Metrics) -> bool {
    m.churn.roc_auc > m.churn_baseline.roc_auc && m.clv.spearman > m.clv_baseline.spearman
}

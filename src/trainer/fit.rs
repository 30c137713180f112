//! The training run: split, features, hyper-parameter choice, forests, calibration, honest
//! evaluation against baselines, segment rules, and the artifact (bundle + manifest) ready
//! to publish.

use crate::features::{FeatureSchema, DAY};
use crate::forest::{fit_forest, FlatForest, ForestParams, TrainingMatrix};
use crate::model::{
    sha256_hex, Calibration, DataLineage, Evaluation, FeatureRange, FileEntry, Hyperparameters,
    Manifest, Metrics, ModelBundle, ModelError, Profile, SegmentRules, SplitInfo, TrainerInfo,
    BUNDLE_FILE, EVALUATION_FILE, REPORT_FILE,
};

use super::dataset::{
    build_rows, cap_rows, count_rows, in_share, split_by_customer, stable_hash, Rows,
};
use super::evaluate::{compare, evaluate, Comparison, Evaluated};
use super::grid::grid_search;
use super::load::TransactionLog;
use super::rhythm::{fit_season, prior_from_rows};
use super::split::{plan_split, Split, SplitOptions};
use super::{views, Progress, TrainError};
use crate::time::fmt_ts;

/// Overrides for one forest's regularisation; `None` lets the grid choose.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `Some(None)` means unlimited depth.
    pub max_depth: Option<Option<u16>>,
    pub min_samples_leaf: Option<usize>,
}

/// How raw churn probabilities are calibrated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CalibrationMethod {
    /// Whichever of isotonic, Platt and none has the lowest Brier score in a two-fold
    /// cross-validation on the calibration rows.
    #[default]
    Auto,
    /// Isotonic regression, linear between its steps.
    Isotonic,
    /// A logistic curve on the raw log-odds.
    Platt,
    /// Raw forest probabilities.
    None,
}

/// Share of the training rows (by customer) held out of the calibration forest, whose
/// predictions for them the calibration is learnt on.
const CALIBRATION_SHARE: f64 = 0.2;

#[derive(Debug, Clone)]
pub struct FitOptions {
    pub split: SplitOptions,
    pub lookback_days: u32,
    /// Share of customers held out when the data cannot span an out-of-time split.
    pub holdout_share: f64,
    pub n_trees: usize,
    pub mtry: Option<usize>,
    pub seed: u64,
    pub churn: Overrides,
    pub clv: Overrides,
    pub grid_trees: usize,
    pub grid_max_rows: usize,
    /// Training (and refit) rows are sampled to about this many while they are built.
    pub max_train_rows: usize,
    /// Validation rows likewise, by customer (a customer's rows in every quarter, or none).
    pub max_validation_rows: usize,
    pub calibration: CalibrationMethod,
    /// The segment rules; a `value_high` of `None` is learnt (see [`default_value_high`]).
    pub segments: SegmentRules,
    pub value_high: Option<f64>,
    pub threads: usize,
    pub force: bool,
    /// A version to compare with on the validation rows after its data ended, and that
    /// end (`fit --compare-alias`, `--gate-alias`).
    pub compare: Option<(std::sync::Arc<ModelBundle>, i64)>,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            split: SplitOptions {
                horizon_days: 180,
                as_of: None,
                max_snapshots: 12,
                stride_days: 30,
                max_quarters: 3,
                min_history_days: 90,
            },
            lookback_days: 365,
            holdout_share: 0.2,
            n_trees: 100,
            mtry: None,
            seed: 7,
            churn: Overrides::default(),
            clv: Overrides::default(),
            grid_trees: 30,
            grid_max_rows: 60_000,
            max_train_rows: 400_000,
            max_validation_rows: 400_000,
            calibration: CalibrationMethod::default(),
            segments: SegmentRules::default(),
            value_high: None,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            force: false,
            compare: None,
        }
    }
}

impl FitOptions {
    pub fn horizon(&self) -> i64 {
        i64::from(self.split.horizon_days) * DAY
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
    /// What the report draws (`evaluation.json`).
    pub evaluation: Evaluation,
    /// [`FitOptions::compare`]'s version against this one.
    pub compared: Option<Comparison>,
}

/// A file of a version: its name and bytes.
pub type ArtifactFile = (&'static str, bytes::Bytes);

impl Trained {
    /// What is published: the manifest listing every file, and the files: the bundle, the
    /// evaluation and the report drawn from both (`report.html`).
    pub fn into_artifact(self) -> Result<(Manifest, Vec<ArtifactFile>), TrainError> {
        let mut manifest = self.manifest;
        let evaluation = self
            .evaluation
            .to_json()
            .map_err(|e| ModelError::Inconsistent(format!("{EVALUATION_FILE}: {e}")))?;
        let side = crate::report::Side {
            manifest: &manifest,
            evaluation: Some(&self.evaluation),
        };
        let report = crate::report::version_page(side, None)?.into_bytes();
        let files = vec![
            (BUNDLE_FILE, self.bundle_bytes.into()),
            (EVALUATION_FILE, evaluation.into()),
            (REPORT_FILE, report.into()),
        ];
        manifest.files = files
            .iter()
            .map(|(name, b): &(&str, bytes::Bytes)| FileEntry {
                name: name.to_string(),
                sha256: sha256_hex(b),
                bytes: b.len() as u64,
            })
            .collect();
        Ok((manifest, files))
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

/// The calibration of a churn forest fitted on `rows` with `params`, learnt on an inner
/// split: a forest of the same recipe fitted on 80 % of the customers predicts the other
/// 20 %, and the map from those predictions to what those customers did is the calibration.
/// The published forest is fitted on all rows; it differs from the inner one only by the
/// fifth of the rows it also saw.
/// `Auto` chooses the method here; the chosen one is returned with the calibration, so that
/// the refit uses the method the evaluation measured.
fn inner_calibration(
    rows: &Rows,
    log: &TransactionLog,
    params: &ForestParams,
    (method, opts): (CalibrationMethod, &FitOptions),
    progress: &dyn Progress,
) -> Result<(CalibrationMethod, Calibration), TrainError> {
    if method == CalibrationMethod::None {
        return Ok((method, Calibration::None));
    }
    let (held, fit) = split_by_customer(rows, log, "calibration", CALIBRATION_SHARE);
    if held.len() < 100 || fit.len() < 100 {
        return Ok((CalibrationMethod::None, Calibration::None));
    }
    let tick = progress.start("calibrating churn", params.n_trees as u64);
    let forest = fit_forest(
        &TrainingMatrix::new(&fit.x)?,
        &fit.churn_target(),
        params,
        opts.threads,
        &|n| tick.inc(n as u64),
    )?;
    let raw = forest.predict(&held.x);
    let fit = |m: CalibrationMethod, idx: &[usize]| {
        let (p, l): (Vec<f64>, Vec<bool>) = idx.iter().map(|&i| (raw[i], held.churned[i])).unzip();
        match m {
            CalibrationMethod::Isotonic => Calibration::isotonic(&p, &l),
            CalibrationMethod::Platt => Calibration::platt(&p, &l),
            CalibrationMethod::None | CalibrationMethod::Auto => Calibration::None,
        }
    };
    let all: Vec<usize> = (0..held.len()).collect();
    let method = match method {
        CalibrationMethod::Auto => {
            let half =
                |i: usize| stable_hash("calibration-cv", &log.ids[held.cust[i] as usize]) & 1;
            let (a, b): (Vec<usize>, Vec<usize>) = all.iter().partition(|&&i| half(i) == 0);
            // Each half's map scored on the other half: an honest Brier per method.
            let brier = |m: CalibrationMethod| {
                let score = |fit_on: &[usize], test: &[usize]| {
                    let c = fit(m, fit_on);
                    test.iter()
                        .map(|&i| (c.apply(raw[i]) - f64::from(u8::from(held.churned[i]))).powi(2))
                        .sum::<f64>()
                };
                score(&a, &b) + score(&b, &a)
            };
            [
                CalibrationMethod::None,
                CalibrationMethod::Platt,
                CalibrationMethod::Isotonic,
            ]
            .into_iter()
            .min_by(|x, y| brier(*x).total_cmp(&brier(*y)))
            .unwrap_or(CalibrationMethod::None)
        }
        m => m,
    };
    Ok((method, fit(method, &all)))
}

fn method_name(m: CalibrationMethod) -> &'static str {
    match m {
        CalibrationMethod::Auto | CalibrationMethod::None => "none",
        CalibrationMethod::Isotonic => "isotonic",
        CalibrationMethod::Platt => "platt",
    }
}

/// The spend over the last year at which a customer counts as valuable, when not set: the
/// 80th percentile of that spend on the training rows, to two significant digits. Money has
/// no scale we could fix for every programme, so it is learnt once and then stays, stored,
/// for the version: the same spend is valuable whatever the risk at scoring time.
pub fn default_value_high(rows: &Rows) -> f64 {
    let mut spend = rows.feature("spend_365d");
    if spend.is_empty() {
        return 0.0;
    }
    spend.sort_by(f64::total_cmp);
    let p80 = spend[((spend.len() - 1) as f64 * 0.8).round() as usize];
    if p80 <= 0.0 {
        return 0.0;
    }
    let scale = 10f64.powf(p80.log10().floor() - 1.0);
    (p80 / scale).round() * scale
}

/// Runs the whole training: returns the version, or refuses if the models do not beat their
/// baselines and `force` is off.
pub fn train(
    log: &TransactionLog,
    opts: &FitOptions,
    run: &RunInfo,
    progress: &dyn Progress,
) -> Result<Trained, TrainError> {
    let split = plan_split(log.quality.first_ts, log.quality.last_ts, &opts.split)?;
    let season = fit_season(log, split.validation());
    let mut recipe = fit_and_evaluate(log, &split, season, opts, progress)?;
    let beats = beats_baselines(&recipe.evaluated.metrics);
    if !beats && !opts.force {
        return Err(TrainError::NotBetter(Box::new(recipe.evaluated.metrics)));
    }
    // The artifact: the same recipe refitted on the latest labelled data.
    let refit_rows = rows_at(
        log,
        split.refit_snapshots(),
        opts,
        Sample::train("refit"),
        progress,
    )?;
    let (churn, clv) = fit_pair(
        &refit_rows,
        &recipe.churn,
        &recipe.clv,
        opts,
        "refitting on the latest data",
        progress,
    )?;
    let (_, calibration) = inner_calibration(
        &refit_rows,
        log,
        &recipe.churn,
        (recipe.calibration, opts),
        progress,
    )?;
    let bundle = ModelBundle {
        schema: FeatureSchema::current(),
        horizon_days: opts.split.horizon_days,
        churn,
        clv,
        calibration,
        rhythm: prior_from_rows(&refit_rows, season),
        segments: recipe.segments,
    };
    let bundle_bytes = bundle.encode()?;
    let mut evaluation = std::mem::take(&mut recipe.evaluated.curves);
    evaluation.importance = views::importance(&bundle, &refit_rows);
    views::add_data_quality(&mut evaluation, &log.quality);
    let facts = Facts {
        split: &split,
        rows: [recipe.rows[0], recipe.rows[1], refit_rows.len()],
        hyperparameters: Hyperparameters {
            churn: recipe.churn,
            clv: recipe.clv,
            calibration: method_name(recipe.calibration).into(),
            snapshot_stride_days: opts.split.stride_days,
            selected_by: if recipe.grid.is_empty() {
                "flags"
            } else {
                "grid"
            }
            .into(),
            grid: recipe.grid,
        },
        evaluated: recipe.evaluated,
        beats,
        ranges: feature_ranges(&refit_rows.x, opts.split.horizon_days),
        profile: views::profile(&bundle, &recipe.val_rows),
    };
    let manifest = manifest(log, opts, run, &bundle, &bundle_bytes, facts);
    Ok(Trained {
        manifest,
        bundle,
        bundle_bytes,
        evaluation,
        compared: recipe.compared,
    })
}

/// The recipe the evaluation chose and what it measured.
struct Recipe {
    churn: ForestParams,
    clv: ForestParams,
    grid: Vec<crate::model::GridPoint>,
    calibration: CalibrationMethod,
    segments: SegmentRules,
    evaluated: Evaluated,
    /// Training and validation rows.
    rows: [usize; 2],
    /// The validation rows, for the training profile.
    val_rows: Rows,
    compared: Option<Comparison>,
}

/// Chooses the forests' regularisation and the calibration on the training rows, fits, and
/// evaluates on the validation rows.
fn fit_and_evaluate(
    log: &TransactionLog,
    split: &Split,
    season: [f64; 4],
    opts: &FitOptions,
    progress: &dyn Progress,
) -> Result<Recipe, TrainError> {
    let base = ForestParams {
        n_trees: opts.n_trees,
        mtry: opts.mtry,
        seed: opts.seed,
        ..ForestParams::default()
    };
    let (train_rows, val_rows) = split_rows(log, split, opts, progress)?;
    let (churn, clv, grid) = grid_search(&train_rows, log, opts, &base, progress)?;
    let forests = fit_pair(&train_rows, &churn, &clv, opts, "fitting forests", progress)?;
    let (method, calibration) =
        inner_calibration(&train_rows, log, &churn, (opts.calibration, opts), progress)?;
    let segments = SegmentRules {
        value_high: opts
            .value_high
            .unwrap_or_else(|| default_value_high(&train_rows)),
        ..opts.segments.clone()
    };
    segments.validate().map_err(TrainError::Split)?;
    let evaluated = evaluate(
        [&forests.0, &forests.1],
        &calibration,
        &prior_from_rows(&train_rows, season),
        &segments,
        &train_rows,
        &val_rows,
    );
    Ok(Recipe {
        churn,
        clv,
        grid,
        calibration: method,
        segments,
        evaluated,
        rows: [train_rows.len(), val_rows.len()],
        compared: opts.compare.as_ref().map(|(other, from)| {
            compare(
                [&forests.0, &forests.1],
                &calibration,
                other,
                &val_rows,
                *from,
            )
        }),
        val_rows,
    })
}

/// Which customers' rows to build, and how rows are sampled to the budget.
struct Sample<'a> {
    label: &'static str,
    include: Box<dyn Fn(usize) -> bool + 'a>,
    max_rows: usize,
    /// Training rows are sampled per (customer, snapshot); validation rows per customer, so
    /// that the quarters compare the same customers.
    by_customer: bool,
    salt: &'static str,
}

impl<'a> Sample<'a> {
    fn train(salt: &'static str) -> Self {
        Sample {
            label: "building features",
            include: Box::new(|_| true),
            max_rows: usize::MAX,
            by_customer: false,
            salt,
        }
    }
}

/// Rows at the snapshots for the customers the sample includes, sampled while they are
/// built so that stacking many snapshots stays within the budget.
fn rows_at(
    log: &TransactionLog,
    snapshots: &[i64],
    opts: &FitOptions,
    s: Sample,
    progress: &dyn Progress,
) -> Result<Rows, TrainError> {
    let lookback = i64::from(opts.lookback_days) * DAY;
    let budget = if s.max_rows == usize::MAX {
        if s.by_customer {
            opts.max_validation_rows
        } else {
            opts.max_train_rows
        }
    } else {
        s.max_rows
    };
    let n = count_rows(log, snapshots, lookback, s.include.as_ref());
    let share = (budget as f64 / n.max(1) as f64).min(1.0);
    let keep = |c: usize, k: usize| {
        share >= 1.0
            || if s.by_customer {
                in_share(stable_hash(s.salt, &log.ids[c]), share)
            } else {
                in_share(
                    stable_hash(s.salt, &format!("{}#{}", log.ids[c], snapshots[k])),
                    share,
                )
            }
    };
    let tick = progress.start(s.label, log.n_customers() as u64);
    let rows = build_rows(
        log,
        snapshots,
        opts.horizon(),
        lookback,
        s.include.as_ref(),
        &keep,
        tick.as_ref(),
    )?;
    // Hash sampling lands near the budget; cap what rounding left over.
    Ok(cap_rows(
        rows,
        budget.saturating_add(budget / 50),
        log,
        s.salt,
    ))
}

/// Training and validation rows: earlier snapshots and later ones, or, for a holdout, the
/// same snapshots split by customer.
fn split_rows(
    log: &TransactionLog,
    split: &Split,
    opts: &FitOptions,
    progress: &dyn Progress,
) -> Result<(Rows, Rows), TrainError> {
    let held_out =
        move |c: usize| in_share(stable_hash("holdout", &log.ids[c]), opts.holdout_share);
    let holdout = matches!(split, Split::Holdout { .. });
    let train = Sample {
        include: if holdout {
            Box::new(move |c| !held_out(c))
        } else {
            Box::new(|_| true)
        },
        ..Sample::train("train-rows")
    };
    let validation = Sample {
        label: "building validation features",
        include: if holdout {
            Box::new(held_out)
        } else {
            Box::new(|_| true)
        },
        max_rows: usize::MAX,
        by_customer: true,
        salt: "validation-rows",
    };
    let train = rows_at(log, split.train_snapshots(), opts, train, progress)?;
    let val = rows_at(
        log,
        split.validation_snapshots(),
        opts,
        validation,
        progress,
    )?;
    if train.len() < 50 || val.len() < 20 {
        return Err(TrainError::Split(format!(
            "too few customers to train and validate: {} training rows, {} validation rows",
            train.len(),
            val.len()
        )));
    }
    Ok((train, val))
}

/// What the training found, for the manifest.
struct Facts<'a> {
    split: &'a Split,
    /// Training, validation and refit rows.
    rows: [usize; 3],
    hyperparameters: Hyperparameters,
    evaluated: Evaluated,
    beats: bool,
    ranges: Vec<FeatureRange>,
    profile: Profile,
}

/// Each feature's range over the rows the forests were fitted on, in schema order. Tenure
/// grows with the calendar, and a version is scored up to a horizon after its latest
/// labelled snapshot, so its range reaches that far: a long-standing customer is not
/// "outside" merely because the data to label them has not happened yet.
fn feature_ranges(x: &crate::forest::Matrix, horizon_days: u32) -> Vec<FeatureRange> {
    let mut r: Vec<(f64, f64)> = vec![(f64::INFINITY, f64::NEG_INFINITY); x.n_cols];
    for row in x.values.chunks_exact(x.n_cols.max(1)) {
        for (slot, &v) in r.iter_mut().zip(row) {
            *slot = (slot.0.min(v), slot.1.max(v));
        }
    }
    if let Some(t) = r.get_mut(crate::features::f::TENURE_DAYS) {
        t.1 += f64::from(horizon_days);
    }
    crate::features::FEATURE_NAMES
        .iter()
        .zip(r)
        .map(|(name, (min, max))| FeatureRange {
            name: name.to_string(),
            min,
            max,
        })
        .collect()
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
    // Milliseconds in the id: two versions fitted in one second still sort by age.
    let version = format!(
        "v{}-{}",
        run.created_at.format("%Y%m%d-%H%M%S%.3f"),
        &sha[..6]
    );
    let split = facts.split;
    let fmt_all = |ts: &[i64]| ts.iter().map(|&t| fmt_ts(t)).collect();
    Manifest {
        format: 2,
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
            validation_snapshots: fmt_all(split.validation_snapshots()),
            horizon_days: opts.split.horizon_days,
            lookback_days: opts.lookback_days,
            train_snapshots: fmt_all(split.train_snapshots()),
            refit_snapshots: fmt_all(split.refit_snapshots()),
            train_rows: facts.rows[0] as u64,
            validation_rows: facts.rows[1] as u64,
            refit_rows: facts.rows[2] as u64,
        },
        hyperparameters: facts.hyperparameters,
        feature_schema: FeatureSchema::current(),
        metrics: facts.evaluated.metrics,
        beats_baselines: facts.beats,
        forced: !facts.beats,
        segments: bundle.segments.clone(),
        segment_table: facts.evaluated.segment_table,
        rhythm: bundle.rhythm.clone(),
        feature_ranges: facts.ranges,
        profile: Some(facts.profile),
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

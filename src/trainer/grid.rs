//! Choosing each forest's depth and leaf size: small forests fitted on an inner split of the
//! training rows and scored on the rest, never on the validation rows, whose metrics must
//! stay honest.

use crate::forest::{fit_forest, ForestParams, TrainingMatrix};
use crate::model::GridPoint;

use super::dataset::{cap_rows, split_by_customer, Rows};
use super::eval::{roc_auc, spearman};
use super::fit::{FitOptions, Overrides};
use super::load::TransactionLog;
use super::{Progress, TrainError};

fn params_for(base: &ForestParams, o: &Overrides, depth: Option<u16>, leaf: usize) -> ForestParams {
    ForestParams {
        max_depth: o.max_depth.unwrap_or(depth),
        min_samples_leaf: o.min_samples_leaf.unwrap_or(leaf),
        ..base.clone()
    }
}

const GRID_DEPTHS: [Option<u16>; 3] = [Some(8), Some(12), Some(16)];
const GRID_LEAVES: [usize; 4] = [5, 20, 50, 200];

/// Fewest inner validation rows at the latest snapshot for the grid to score on them alone.
const MIN_GRID_ROWS: usize = 2_000;

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
pub(super) fn grid_search(
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
    // Scored on the latest training snapshot: of the stacked ones, the population most like
    // the one the forests will meet.
    let latest = inner_val.at_snapshot(inner_val.snapshots.len().saturating_sub(1));
    let inner_val = if latest.len() >= MIN_GRID_ROWS {
        latest
    } else {
        inner_val
    };
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

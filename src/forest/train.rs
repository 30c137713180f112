//! Fitting forests with smartcore on every core.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use smartcore::ensemble::random_forest_regressor::{
    RandomForestRegressor, RandomForestRegressorParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;

use super::{FlatForest, ForestError};

/// smartcore's regressor as we fit it (row-major f64 matrix, f64 targets).
pub type SmartcoreForest = RandomForestRegressor<f64, f64, DenseMatrix<f64>, Vec<f64>>;

/// Trees fitted per smartcore call: small enough for a steady progress bar and an even
/// spread over cores, large enough that smartcore's per-call column sort stays cheap.
const TREES_PER_CHUNK: usize = 10;

/// A row-major matrix of feature rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matrix {
    pub n_rows: usize,
    pub n_cols: usize,
    pub values: Vec<f64>,
}

impl Matrix {
    pub fn new(n_cols: usize) -> Self {
        Matrix {
            n_rows: 0,
            n_cols,
            values: Vec::new(),
        }
    }

    pub fn push_row(&mut self, row: &[f64]) {
        debug_assert_eq!(row.len(), self.n_cols);
        self.values.extend_from_slice(row);
        self.n_rows += 1;
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.n_cols..(i + 1) * self.n_cols]
    }

    /// The rows at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Matrix {
        let mut m = Matrix::new(self.n_cols);
        m.values.reserve(idx.len() * self.n_cols);
        for &i in idx {
            m.push_row(self.row(i));
        }
        m
    }
}

/// Forest hyper-parameters, recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForestParams {
    pub n_trees: usize,
    /// Levels, root = 1 (smartcore's convention; scikit-learn's depth + 1).
    pub max_depth: Option<u16>,
    pub min_samples_leaf: usize,
    pub min_samples_split: usize,
    /// Features tried per split; default floor(sqrt(n_features)).
    pub mtry: Option<usize>,
    pub seed: u64,
}

impl Default for ForestParams {
    fn default() -> Self {
        ForestParams {
            n_trees: 100,
            max_depth: Some(12),
            min_samples_leaf: 20,
            min_samples_split: 2,
            mtry: None,
            seed: 7,
        }
    }
}

impl ForestParams {
    fn smartcore(&self, n_trees: usize, seed: u64) -> RandomForestRegressorParameters {
        RandomForestRegressorParameters {
            max_depth: self.max_depth,
            min_samples_leaf: self.min_samples_leaf.max(1),
            min_samples_split: self.min_samples_split.max(2),
            n_trees,
            m: self.mtry,
            keep_samples: false,
            seed,
        }
    }
}

/// Training rows checked and laid out for smartcore once, then shared by every forest fitted
/// on them (churn and CLV use the same rows).
#[derive(Debug)]
pub struct TrainingMatrix {
    x: DenseMatrix<f64>,
    n_rows: usize,
    n_cols: usize,
}

impl TrainingMatrix {
    /// Refuses any non-finite value: smartcore panics on NaN at fit time.
    pub fn new(m: &Matrix) -> Result<Self, ForestError> {
        if m.n_rows == 0 {
            return Err(ForestError::Shape("no training rows".into()));
        }
        if let Some(i) = m.values.iter().position(|v| !v.is_finite()) {
            return Err(ForestError::NonFinite {
                row: i / m.n_cols,
                col: i % m.n_cols,
            });
        }
        let x = DenseMatrix::new(m.n_rows, m.n_cols, m.values.clone(), false)
            .map_err(|e| ForestError::Smartcore(e.to_string()))?;
        Ok(TrainingMatrix {
            x,
            n_rows: m.n_rows,
            n_cols: m.n_cols,
        })
    }

    pub fn n_rows(&self) -> usize {
        self.n_rows
    }
}

fn check_target(x: &TrainingMatrix, y: &[f64]) -> Result<(), ForestError> {
    if y.len() != x.n_rows {
        return Err(ForestError::Shape(format!(
            "{} targets for {} rows",
            y.len(),
            x.n_rows
        )));
    }
    if let Some(row) = y.iter().position(|v| !v.is_finite()) {
        return Err(ForestError::NonFiniteTarget { row });
    }
    Ok(())
}

/// Fits one smartcore forest, unchanged: the reference the flat forest is tested against.
pub fn smartcore_forest(
    x: &TrainingMatrix,
    y: &[f64],
    params: &ForestParams,
) -> Result<SmartcoreForest, ForestError> {
    check_target(x, y)?;
    RandomForestRegressor::fit(
        &x.x,
        &y.to_vec(),
        params.smartcore(params.n_trees, params.seed),
    )
    .map_err(|e| ForestError::Smartcore(e.to_string()))
}

impl FlatForest {
    /// Compiles a smartcore forest fitted by [`smartcore_forest`].
    pub fn compile(rf: &SmartcoreForest, n_features: usize) -> Result<Self, ForestError> {
        Self::from_smartcore(rf, n_features)
    }
}

/// Fits `params.n_trees` trees on `threads` threads as independent sub-forests with distinct
/// seeds, each compiled to a flat forest, then joined in chunk order (so the result does not
/// depend on thread timing). `progress` is called with the number of trees just finished.
pub fn fit_forest(
    x: &TrainingMatrix,
    y: &[f64],
    params: &ForestParams,
    threads: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<FlatForest, ForestError> {
    check_target(x, y)?;
    let n_trees = params.n_trees.max(1);
    let threads = threads.max(1);
    let n_chunks = n_trees.div_ceil(TREES_PER_CHUNK).max(threads.min(n_trees));
    let sizes: Vec<usize> = (0..n_chunks)
        .map(|k| n_trees / n_chunks + usize::from(k < n_trees % n_chunks))
        .collect();
    let y = y.to_vec();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<FlatForest, ForestError>>>> =
        Mutex::new((0..n_chunks).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.min(n_chunks) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n_chunks {
                    break;
                }
                // smartcore seeds tree i of a forest with seed + i: space the sub-forests'
                // seeds far apart so no two trees share one.
                let seed = params.seed.wrapping_add((k as u64) << 32);
                let r = RandomForestRegressor::fit(&x.x, &y, params.smartcore(sizes[k], seed))
                    .map_err(|e| ForestError::Smartcore(e.to_string()))
                    .and_then(|rf| FlatForest::compile(&rf, x.n_cols));
                let ok = r.is_ok();
                if let Ok(mut slots) = results.lock() {
                    slots[k] = Some(r);
                }
                if !ok {
                    // Leave the remaining chunks: the fit has failed.
                    next.store(n_chunks, Ordering::Relaxed);
                    break;
                }
                progress(sizes[k]);
            });
        }
    });
    let slots = results
        .into_inner()
        .map_err(|_| ForestError::Smartcore("a fitting thread panicked".into()))?;
    // A failed chunk stops the others, so report its error before any chunk left unfitted.
    let mut parts = Vec::with_capacity(n_chunks);
    let mut missing = false;
    for slot in slots {
        match slot {
            Some(r) => parts.push(r?),
            None => missing = true,
        }
    }
    if missing {
        return Err(ForestError::Smartcore("a sub-forest was not fitted".into()));
    }
    FlatForest::concat(parts)
}

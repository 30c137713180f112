//! Random forests: fitting with smartcore, and the flat form we serve from.
//!
//! smartcore fits (single-threaded, so [`fit_forest`] runs sub-forests with different seeds on
//! every core); each fitted forest is then compiled into a [`FlatForest`], a contiguous node
//! array that predicts bit for bit what smartcore predicts, keeps every node's mean for
//! per-prediction reasons, and is what the artifact stores. Pure: no IO, no async.

mod flat;
mod mirror;
mod train;

pub use flat::{Contributions, FlatForest, FlatNode};
pub use train::{
    fit_forest, smartcore_forest, ForestParams, Matrix,
    SmartcoreForest as SmartcoreForestRegressor, TrainingMatrix,
};

/// What can go wrong fitting, compiling or loading a forest.
#[derive(Debug, thiserror::Error)]
pub enum ForestError {
    #[error("training data has a non-finite value at row {row}, column {col}")]
    NonFinite { row: usize, col: usize },
    #[error("training target has a non-finite value at row {row}")]
    NonFiniteTarget { row: usize },
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("smartcore: {0}")]
    Smartcore(String),
    #[error("cannot read smartcore's forest layout (was smartcore upgraded?): {0}")]
    Mirror(String),
    #[error("malformed flat forest: {0}")]
    Malformed(String),
}

#[cfg(test)]
mod tests;

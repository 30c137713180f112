//! The one path from a customer to a score: features (from a history with the trainer's own
//! code, or given by name) → both flat forests → segment → reasons. The gRPC server, offline
//! batch scoring and the tests all call this; none of it knows about transport.

mod reasons;

use crate::features::{
    CustomerSummary, FeatureError, FeatureSchema, FeatureVector, Transaction, N_FEATURES,
};
use crate::model::{Manifest, ModelBundle, Segment};

pub use reasons::reason_text;

/// What a scoring call may not exceed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_history: usize,
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_history: 10_000,
            max_batch: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoringError {
    /// A request field is wrong; `field` is its path ("history.transactions[3].amount").
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("version {0} does not exist")]
    VersionNotFound(String),
    /// The version could not be read now (the store is unreachable): worth retrying.
    #[error("version {version} cannot be loaded now: {reason}")]
    VersionUnavailable { version: String, reason: String },
    /// The version exists but cannot answer here (corrupt, or another feature schema).
    #[error("version {version} cannot be used: {reason}")]
    VersionUnusable { version: String, reason: String },
    #[error("no model version is loaded yet")]
    NotReady,
}

impl ScoringError {
    /// A wrong request field, named by its path.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ScoringError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A bundle laid out for another feature schema than the one this build computes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("version {version} uses feature schema v{found} ({found_len} features); this build computes v{want} ({want_len} features)")]
pub struct SchemaMismatch {
    pub version: String,
    pub found: u32,
    pub found_len: usize,
    pub want: u32,
    pub want_len: usize,
}

/// A loaded, verified version, ready to score.
#[derive(Debug)]
pub struct Model {
    pub version: String,
    pub manifest: Manifest,
    pub bundle: ModelBundle,
    spend_trend: usize,
}

impl Model {
    /// Accepts a bundle only if its schema is the one this build computes from histories.
    pub fn new(manifest: Manifest, bundle: ModelBundle) -> Result<Self, SchemaMismatch> {
        let current = FeatureSchema::current();
        if bundle.schema != current {
            return Err(SchemaMismatch {
                version: manifest.version,
                found: bundle.schema.version,
                found_len: bundle.schema.len(),
                want: current.version,
                want_len: current.len(),
            });
        }
        let spend_trend = current.index_of("spend_trend").unwrap_or(0);
        Ok(Model {
            version: manifest.version.clone(),
            manifest,
            bundle,
            spend_trend,
        })
    }

    pub fn schema(&self) -> &FeatureSchema {
        &self.bundle.schema
    }
}

/// A scored customer.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub churn: f64,
    pub clv: f64,
    pub segment: Segment,
    pub reasons: Vec<Reason>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    pub feature: &'static str,
    pub churn_contribution: f64,
    pub text: String,
}

/// Rows of a row-major matrix in schema column order (the KServe V2 tensor `field`), each
/// checked finite.
pub fn features_from_rows(
    field: &str,
    values: &[f64],
    n_rows: usize,
) -> Result<Vec<FeatureVector>, ScoringError> {
    if values.len() != n_rows * N_FEATURES {
        return Err(ScoringError::invalid(
            field,
            format!(
                "{} values for {n_rows} rows of {N_FEATURES} features",
                values.len()
            ),
        ));
    }
    values
        .chunks_exact(N_FEATURES)
        .enumerate()
        .map(|(r, row)| {
            let mut f = [0.0; N_FEATURES];
            for (j, (&v, slot)) in row.iter().zip(f.iter_mut()).enumerate() {
                if !v.is_finite() {
                    return Err(ScoringError::invalid(
                        format!("{field}[{r}][{j}]"),
                        format!(
                            "{} is {v}, not a finite number",
                            crate::features::FEATURE_NAMES[j]
                        ),
                    ));
                }
                *slot = v;
            }
            Ok(f)
        })
        .collect()
}

/// Features given by name, in any order, checked against the schema.
pub fn features_from_named(
    schema: &FeatureSchema,
    names: &[String],
    values: &[f64],
) -> Result<FeatureVector, ScoringError> {
    if names.len() != values.len() {
        return Err(ScoringError::invalid(
            "features.values",
            format!("{} values for {} names", values.len(), names.len()),
        ));
    }
    NamePlan::new(schema, names)?.features(values)
}

/// Where each named value goes in the schema's vector. A batch's shared `feature_names` are
/// resolved once, not once per customer.
#[derive(Debug, Clone, PartialEq)]
pub struct NamePlan {
    /// `to[i]`: the schema index of the `i`-th name.
    to: Vec<usize>,
}

impl NamePlan {
    /// Every schema feature exactly once, and nothing else.
    pub fn new(schema: &FeatureSchema, names: &[String]) -> Result<Self, ScoringError> {
        let mut to = Vec::with_capacity(names.len());
        let mut seen = [false; N_FEATURES];
        for (i, name) in names.iter().enumerate() {
            // Callers usually send the schema's order: try the same position first.
            let j = if schema.names.get(i) == Some(name) {
                i
            } else {
                schema.index_of(name).ok_or_else(|| {
                    ScoringError::invalid(
                        format!("features.names[{i}]"),
                        format!("unknown feature {name:?}"),
                    )
                })?
            };
            if seen[j] {
                return Err(ScoringError::invalid(
                    format!("features.names[{i}]"),
                    format!("feature {name:?} is given twice"),
                ));
            }
            seen[j] = true;
            to.push(j);
        }
        if let Some(j) = seen.iter().position(|s| !s) {
            return Err(ScoringError::invalid(
                "features.names",
                format!("missing feature {:?}", schema.names[j]),
            ));
        }
        Ok(NamePlan { to })
    }

    /// The vector for values in the plan's name order, each checked finite.
    pub fn features(&self, values: &[f64]) -> Result<FeatureVector, ScoringError> {
        if values.len() != self.to.len() {
            return Err(ScoringError::invalid(
                "features.values",
                format!("{} values for {} names", values.len(), self.to.len()),
            ));
        }
        let mut f = [0.0; N_FEATURES];
        for (i, (&j, &v)) in self.to.iter().zip(values).enumerate() {
            if !v.is_finite() {
                return Err(ScoringError::invalid(
                    format!("features.values[{i}]"),
                    format!(
                        "{} is {v}, not a finite number",
                        crate::features::FEATURE_NAMES[j]
                    ),
                ));
            }
            f[j] = v;
        }
        Ok(f)
    }
}

/// Refuses a batch of more customers than the limit (BatchScore items, KServe V2 rows).
pub fn check_batch_len(field: &str, n: usize, limits: &Limits) -> Result<(), ScoringError> {
    if n > limits.max_batch {
        return Err(ScoringError::invalid(
            field,
            format!(
                "has {n} customers, more than the limit of {}",
                limits.max_batch
            ),
        ));
    }
    Ok(())
}

/// Refuses a history longer than the limit (callers check before converting a payload too).
pub fn check_history_len(n: usize, limits: &Limits) -> Result<(), ScoringError> {
    if n > limits.max_history {
        return Err(ScoringError::invalid(
            "history.transactions",
            format!(
                "has {n} transactions, more than the limit of {}",
                limits.max_history
            ),
        ));
    }
    Ok(())
}

/// Features from a purchase history at `as_of`, with the trainer's code.
pub fn features_from_history(
    txs: &[Transaction],
    as_of: i64,
    limits: &Limits,
) -> Result<FeatureVector, ScoringError> {
    const FIELD: &str = "history.transactions";
    if txs.is_empty() {
        return Err(ScoringError::invalid(
            FIELD,
            "is empty: a customer needs at least one purchase",
        ));
    }
    check_history_len(txs.len(), limits)?;
    for (i, t) in txs.iter().enumerate() {
        if let Err(e) = t.validate() {
            let (field, msg) = match e {
                FeatureError::TimestampOutOfRange(_) => ("time", e.to_string()),
                FeatureError::BadAmount(_) => ("amount", e.to_string()),
                FeatureError::BadPoints { field, .. } => (field, e.to_string()),
                other => ("", other.to_string()),
            };
            return Err(ScoringError::invalid(format!("{FIELD}[{i}].{field}"), msg));
        }
        if !crate::features::is_history(t.ts, as_of) {
            return Err(ScoringError::invalid(
                format!("{FIELD}[{i}].time"),
                "is not before as_of: score a history only up to the moment it describes",
            ));
        }
    }
    let summary = CustomerSummary::from_transactions(txs)
        .map_err(|e| ScoringError::invalid(FIELD, e.to_string()))?;
    summary
        .features(as_of)
        .map_err(|e| ScoringError::invalid(FIELD, e.to_string()))
}

/// Scores a feature vector with both forests; reasons only when asked (they cost a second
/// walk of the churn forest).
pub fn score(model: &Model, f: &FeatureVector, explain: bool) -> Scored {
    let b = &model.bundle;
    let churn = b.churn.predict_row(f);
    let clv = b.clv.predict_row(f).max(0.0);
    let segment = b.segments.segment(churn, clv, f[model.spend_trend]);
    let reasons = if explain {
        reasons::top_reasons(model, f, 3)
    } else {
        Vec::new()
    };
    Scored {
        churn,
        clv,
        segment,
        reasons,
    }
}

#[cfg(test)]
pub(crate) mod tests;

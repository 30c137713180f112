//! The one path from a customer to a score: features (from a history with the trainer's own
//! code, or given by name) → both flat forests → segment → reasons. The gRPC server, offline
//! batch scoring and the tests all call this; none of it knows about transport.

mod reasons;

use crate::features::{
    CustomerSummary, FeatureError, FeatureSchema, FeatureVector, Rhythm, RhythmModel, Transaction,
    N_FEATURES,
};
use crate::model::{Manifest, ModelBundle, Segment, SegmentInputs, SegmentRules};

/// What a scoring call may not exceed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_history: usize,
    pub max_batch: usize,
    /// Most transactions in one request, over all its customers: the cost budget checked
    /// before any work starts.
    pub max_request_transactions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_history: 10_000,
            max_batch: 10_000,
            max_request_transactions: 1_000_000,
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
    /// The server could not run the work (its scoring pool is shutting down).
    #[error("{0}")]
    Busy(String),
    /// More distinct pinned versions than the server holds at once.
    #[error("this server holds at most {0} pinned versions at once (--max-pinned-versions) and all are in use; retry later, or pin a version already held")]
    TooManyPins(usize),
    /// A KServe V2 request named another model than the one served.
    #[error("model {0:?} is not served here; the model is named loyalscore")]
    ModelNotServed(String),
    /// Scored by id, but the state store holds nothing for the customer.
    #[error("customer {0} has no stored state: record their purchases first, or send history or features")]
    CustomerNotFound(String),
    /// The state store cannot be read now: worth retrying.
    #[error("the customer state store is unavailable: {0}")]
    StateUnavailable(String),
    /// The stored state cannot be used (another feature schema, or corrupt).
    #[error("the customer's stored state cannot be used: {0}")]
    StateUnusable(String),
}

impl From<crate::state::StateError> for ScoringError {
    fn from(e: crate::state::StateError) -> Self {
        use crate::state::StateError as S;
        match e {
            S::Schema { .. } | S::Corrupt(_) | S::Features(_) => {
                ScoringError::StateUnusable(e.to_string())
            }
            other => ScoringError::StateUnavailable(other.to_string()),
        }
    }
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
    /// The version's rhythm prior with its season tabulated.
    rhythm: RhythmModel,
    /// What this version has served, against its training profile (none before profiles).
    pub drift: Option<crate::drift::Monitor>,
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
        Ok(Model {
            version: manifest.version.clone(),
            rhythm: RhythmModel::new(bundle.rhythm.clone()),
            drift: manifest
                .profile
                .as_ref()
                .and_then(crate::drift::Monitor::new),
            manifest,
            bundle,
        })
    }

    /// Counts a served answer for drift (the features it was computed from, at `now`).
    pub fn served(&self, features: &FeatureVector, s: &Scored, now: i64) {
        if let Some(d) = &self.drift {
            d.record(features, (s.churn, s.clv), s.segment, now);
        }
    }

    pub fn schema(&self) -> &FeatureSchema {
        &self.bundle.schema
    }

    pub fn rhythm(&self) -> &RhythmModel {
        &self.rhythm
    }

    /// The longest silence a customer in the fitting rows had (the lookback), in seconds.
    pub fn longest_silence(&self) -> Option<i64> {
        let days = self.manifest.split.lookback_days;
        (days > 0).then(|| i64::from(days) * crate::features::DAY)
    }

    /// The features of `f` outside the range the version was fitted on, in schema order.
    pub fn out_of_range(&self, f: &FeatureVector) -> Vec<&'static str> {
        let ranges = &self.manifest.feature_ranges;
        if ranges.len() != f.len() {
            return Vec::new();
        }
        // A hair of slack: a value the trainer saw must not be flagged for rounding.
        let slack = |r: &crate::model::FeatureRange| 1e-9 * (1.0 + r.max.abs().max(r.min.abs()));
        f.iter()
            .zip(ranges)
            .zip(crate::features::FEATURE_NAMES)
            .filter(|((&v, r), _)| v < r.min - slack(r) || v > r.max + slack(r))
            .map(|(_, name)| name)
            .collect()
    }
}

/// The language reasons are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Locale {
    #[default]
    En,
    De,
}

impl Locale {
    /// `en` or `de`, with or without a region (`de-AT`); empty means English.
    pub fn parse(s: &str) -> Result<Self, ScoringError> {
        let lang = s
            .split(['-', '_'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        match lang.as_str() {
            "" | "en" => Ok(Locale::En),
            "de" => Ok(Locale::De),
            _ => Err(ScoringError::invalid(
                "locale",
                format!("{s:?} is not a language we write reasons in; use en or de"),
            )),
        }
    }
}

/// What a scoring call asks for beyond the scores.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Explain {
    /// Reasons for churn, CLV and the segment.
    pub reasons: bool,
    pub locale: Locale,
}

/// When a customer is due, and when to contact them (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub typical_gap_days: f64,
    pub expected_next_purchase: i64,
    pub days_overdue: f64,
    pub overdue_percentile: f64,
    /// Not before their silence is unusual for them ...
    pub contact_from: i64,
    /// ... and not after it is rare even for them, or, once the churn probability says they
    /// are probably gone, not after now.
    pub contact_by: i64,
}

impl Timing {
    /// The CSV columns of the timing fields, shared by every export.
    pub const COLUMNS: [&'static str; 6] = [
        "typical_gap_days",
        "expected_next_purchase",
        "days_overdue",
        "overdue_percentile",
        "contact_from",
        "contact_by",
    ];

    /// The timing fields as CSV cells, in [`Timing::COLUMNS`] order; dates as `YYYY-MM-DD`.
    pub fn cells(&self) -> [String; 6] {
        use crate::time::fmt_day;
        [
            format!("{:.1}", self.typical_gap_days),
            fmt_day(self.expected_next_purchase),
            format!("{:.1}", self.days_overdue),
            format!("{:.3}", self.overdue_percentile),
            fmt_day(self.contact_from),
            fmt_day(self.contact_by),
        ]
    }
}

/// A scored customer.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Calibrated probability of no purchase within the horizon.
    pub churn: f64,
    pub clv: f64,
    pub segment: Segment,
    pub timing: Timing,
    /// What moved the churn probability most (in calibrated points), when asked.
    pub reasons: Vec<Reason>,
    /// What moved the CLV most (in money), when asked.
    pub clv_reasons: Vec<Reason>,
    /// Which rule placed the customer in the segment, when asked.
    pub segment_reason: String,
    /// Features outside the range the version was fitted on: the scores extrapolate there.
    pub out_of_range: Vec<&'static str>,
}

/// What a version is given for one customer.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInput {
    /// The features at as_of: the rhythm, the timing and the segment rules read these.
    pub features: FeatureVector,
    /// For a silence longer than any customer's the version was fitted on (its lookback),
    /// the features at the end of that longest silence: the forests read these instead. The
    /// scores then stay where they were at the edge of what the forests saw rather than
    /// wander where they saw no one (churn once fell from 0.874 to 0.792 between one and two
    /// years of silence).
    pub edge: Option<FeatureVector>,
}

impl From<FeatureVector> for ModelInput {
    fn from(features: FeatureVector) -> Self {
        ModelInput {
            features,
            edge: None,
        }
    }
}

impl ModelInput {
    /// A customer's input at `as_of`; fails as [`CustomerSummary::features`] does.
    pub fn of(
        model: &Model,
        s: &CustomerSummary,
        as_of: i64,
    ) -> Result<Self, crate::features::FeatureError> {
        let features = s.features(as_of)?;
        let edge = match (s.last_ts(), model.longest_silence()) {
            (Some(last), Some(l)) if as_of > last + l => Some(s.features(last + l)?),
            _ => None,
        };
        Ok(ModelInput { features, edge })
    }

    /// What the forests read.
    pub fn for_forests(&self) -> &FeatureVector {
        self.edge.as_ref().unwrap_or(&self.features)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    pub feature: &'static str,
    /// The change this feature's splits caused: calibrated churn points (a probability) for a
    /// churn reason, money for a CLV reason.
    pub contribution: f64,
    pub text: String,
}

/// Rows of a row-major matrix in schema column order (the KServe V2 tensor `field`), each
/// checked against its feature's domain.
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
                crate::features::check_value(j, v)
                    .map_err(|why| ScoringError::invalid(format!("{field}[{r}][{j}]"), why))?;
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
        // Every missing name at once: one round trip, not one per name.
        let missing: Vec<String> = (0..N_FEATURES)
            .filter(|&j| !seen[j])
            .map(|j| format!("{:?}", schema.names[j]))
            .collect();
        if !missing.is_empty() {
            let s = if missing.len() == 1 { "" } else { "s" };
            return Err(ScoringError::invalid(
                "features.names",
                format!("missing feature{s} {}", missing.join(", ")),
            ));
        }
        Ok(NamePlan { to })
    }

    /// The vector for values in the plan's name order, each checked against its domain.
    pub fn features(&self, values: &[f64]) -> Result<FeatureVector, ScoringError> {
        if values.len() != self.to.len() {
            return Err(ScoringError::invalid(
                "features.values",
                format!("{} values for {} names", values.len(), self.to.len()),
            ));
        }
        let mut f = [0.0; N_FEATURES];
        for (i, (&j, &v)) in self.to.iter().zip(values).enumerate() {
            crate::features::check_value(j, v)
                .map_err(|why| ScoringError::invalid(format!("features.values[{i}]"), why))?;
            f[j] = v;
        }
        Ok(f)
    }
}

/// Checks a transaction's ranges; the error names the field under `at`
/// (`history.transactions[3].amount`).
pub fn check_transaction(t: &Transaction, at: &str) -> Result<(), ScoringError> {
    t.validate().map_err(|e| {
        let field = match &e {
            FeatureError::TimestampOutOfRange(_) => "time",
            FeatureError::BadAmount(_) => "amount",
            FeatureError::BadPoints { field, .. } => field,
            _ => "",
        };
        ScoringError::invalid(format!("{at}.{field}"), e.to_string())
    })
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

/// Refuses a request whose customers' histories hold more transactions in all than the cost
/// budget, before any of them is converted or scored.
pub fn check_request_cost(
    field: &str,
    transactions: usize,
    limits: &Limits,
) -> Result<(), ScoringError> {
    if transactions > limits.max_request_transactions {
        return Err(ScoringError::invalid(
            field,
            format!(
                "hold {transactions} transactions in all, more than the limit of {} a request; split the batch",
                limits.max_request_transactions
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
    model: &Model,
    txs: &[Transaction],
    as_of: i64,
    limits: &Limits,
) -> Result<ModelInput, ScoringError> {
    let summary = summary_of_history(txs, as_of, limits)?;
    ModelInput::of(model, &summary, as_of)
        .map_err(|e| ScoringError::invalid("history.transactions", e.to_string()))
}

/// A checked purchase history folded into a summary.
fn summary_of_history(
    txs: &[Transaction],
    as_of: i64,
    limits: &Limits,
) -> Result<CustomerSummary, ScoringError> {
    const FIELD: &str = "history.transactions";
    if txs.is_empty() {
        return Err(ScoringError::invalid(
            FIELD,
            "is empty: a customer needs at least one purchase",
        ));
    }
    check_history_len(txs.len(), limits)?;
    for (i, t) in txs.iter().enumerate() {
        check_transaction(t, &format!("{FIELD}[{i}]"))?;
        if !crate::features::is_history(t.ts, as_of) {
            return Err(ScoringError::invalid(
                format!("{FIELD}[{i}].time"),
                "is not before as_of: score a history only up to the moment it describes",
            ));
        }
    }
    CustomerSummary::from_transactions(txs).map_err(|e| ScoringError::invalid(FIELD, e.to_string()))
}

/// Scores a feature vector at `as_of` with both forests, calibrates the churn probability,
/// judges the customer against their own rhythm and picks the segment; reasons only when
/// asked (they cost a second walk of each forest).
pub fn score(model: &Model, f: &FeatureVector, as_of: i64, explain: Explain) -> Scored {
    score_input(model, &ModelInput::from(*f), as_of, explain)
}

/// [`score`] for an input that may carry the forests' own view ([`ModelInput::edge`]).
pub fn score_input(model: &Model, input: &ModelInput, as_of: i64, explain: Explain) -> Scored {
    let b = &model.bundle;
    let f = &input.features;
    let x = input.for_forests();
    let crate::model::Scores { raw, churn, clv } = b.scores(x);
    let rhythm = Rhythm::from_features(f, as_of, &model.rhythm);
    let inputs = segment_inputs(f, &rhythm, churn);
    let segment = b.segments.segment(&inputs);
    let timing = timing(&rhythm, &b.segments, churn, as_of);
    let mut scored = Scored {
        churn,
        clv,
        segment,
        timing,
        reasons: Vec::new(),
        clv_reasons: Vec::new(),
        segment_reason: String::new(),
        out_of_range: model.out_of_range(f),
    };
    if explain.reasons {
        let why = reasons::Context {
            f: x,
            rhythm: &rhythm,
            inputs: &inputs,
            locale: explain.locale,
            overdue: inputs.overdue_percentile >= b.segments.overdue_unusual,
        };
        scored.reasons = reasons::churn_reasons(model, &why, raw, 3);
        scored.clv_reasons = reasons::clv_reasons(model, &why, 3);
        scored.segment_reason = reasons::segment_reason(segment, &why);
    }
    scored
}

/// What the segment rules look at, from a feature vector, its rhythm and the calibrated
/// churn probability (the trainer's segment table asks this too).
pub fn segment_inputs(f: &FeatureVector, rhythm: &Rhythm, churn: f64) -> SegmentInputs {
    use crate::features::f as ix;
    SegmentInputs {
        churn,
        spend_365d: f[ix::SPEND_365D],
        visits: f[ix::VISITS_TOTAL],
        tenure_days: f[ix::TENURE_DAYS],
        overdue_percentile: rhythm.overdue_percentile,
        visit_trend: rhythm.visit_trend(),
        spend_trend: rhythm.spend_trend(),
    }
}

/// The contact window: it opens when the silence passes `overdue_unusual` of the customer's
/// own gaps and closes when it passes `overdue_late`; once the calibrated churn probability
/// is at or above `churn_gone`, it closes now (or when it opens, if that is later).
fn timing(r: &Rhythm, rules: &SegmentRules, churn: f64, as_of: i64) -> Timing {
    let contact_from = r.silence_quantile_at(rules.overdue_unusual);
    let mut contact_by = r.silence_quantile_at(rules.overdue_late).max(contact_from);
    if churn >= rules.churn_gone {
        contact_by = contact_by.min(contact_from.max(as_of));
    }
    Timing {
        typical_gap_days: r.typical_gap_days,
        expected_next_purchase: r.expected_next_purchase(),
        days_overdue: r.days_overdue,
        overdue_percentile: r.overdue_percentile,
        contact_from,
        contact_by,
    }
}

#[cfg(test)]
pub(crate) mod tests;

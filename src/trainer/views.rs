//! What a fit records of its published forests for people and for monitoring: the feature
//! importances the report draws and the training profile the server measures drift against.

use crate::features::FEATURE_NAMES;
use crate::forest::Matrix;
use crate::model::{Binned, Evaluation, Importance, ModelBundle, Profile};

use super::dataset::Rows;
use super::load::DataQuality;

/// Rows the impurity importance walks (a sample of the refit rows beyond it).
const IMPORTANCE_ROWS: usize = 20_000;
/// Rows whose path attributions are averaged.
const ATTRIBUTION_ROWS: usize = 2_000;

/// Every `k`-th row, for at most `max` rows spread over all of them.
fn spread(n: usize, max: usize) -> Vec<usize> {
    let k = n.div_ceil(max).max(1);
    (0..n).step_by(k).collect()
}

/// Both published forests' importances per feature, on the rows they were refit on.
pub fn importance(bundle: &ModelBundle, rows: &Rows) -> Vec<Importance> {
    let sample = spread(rows.len(), IMPORTANCE_ROWS);
    let x = rows.x.select(&sample);
    let pick = |v: &[f64]| sample.iter().map(|&i| v[i]).collect::<Vec<f64>>();
    let churn_mdi = bundle
        .churn
        .impurity_importance(&x, &pick(&rows.churn_target()));
    let clv_mdi = bundle.clv.impurity_importance(&x, &pick(&rows.spend_next));
    let attr = |f: &crate::forest::FlatForest| mean_abs_attribution(f, &x);
    let (churn_attr, clv_attr) = (attr(&bundle.churn), attr(&bundle.clv));
    FEATURE_NAMES
        .iter()
        .enumerate()
        .map(|(j, name)| Importance {
            feature: name.to_string(),
            churn_mdi: churn_mdi[j],
            clv_mdi: clv_mdi[j],
            churn_attribution: churn_attr[j],
            clv_attribution: clv_attr[j],
        })
        .collect()
}

fn mean_abs_attribution(f: &crate::forest::FlatForest, x: &Matrix) -> Vec<f64> {
    let rows = spread(x.n_rows, ATTRIBUTION_ROWS);
    let mut sum = vec![0.0; x.n_cols];
    for &i in &rows {
        for (s, c) in sum.iter_mut().zip(f.contributions(x.row(i)).features) {
            *s += c.abs();
        }
    }
    let n = rows.len().max(1) as f64;
    sum.iter().map(|s| s / n).collect()
}

/// The features and the published scores on the validation rows, binned.
pub fn profile(bundle: &ModelBundle, val: &Rows) -> Profile {
    let features = FEATURE_NAMES
        .iter()
        .map(|name| Binned::from_values(name, &val.feature(name)))
        .collect();
    let scores: Vec<_> = (0..val.len())
        .map(|i| bundle.scores(val.x.row(i)))
        .collect();
    let column = |f: fn(&crate::model::Scores) -> f64| scores.iter().map(f).collect::<Vec<f64>>();
    Profile {
        rows: val.len() as u64,
        features,
        churn: Some(Binned::from_values("churn", &column(|s| s.churn))),
        clv: Some(Binned::from_values("clv", &column(|s| s.clv))),
    }
}

/// The data-quality counts the report shows (counts only: the examples hold raw rows).
pub fn add_data_quality(e: &mut Evaluation, q: &DataQuality) {
    e.rejected = q
        .rejected
        .iter()
        .map(|(reason, r)| (reason.as_str().to_string(), r.count))
        .collect();
    e.returns = q.returns;
}

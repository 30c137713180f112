//! Experiment arms: which arm of an A/B test a customer falls in.
//!
//! The arm is a pure function of the experiment's salt, the customer id and the arm weights:
//! no state, no randomness at request time, so a customer lands in the same arm on every
//! request, replica and restart, and a new salt reshuffles everyone. Pure: no IO.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::hashing::{in_share, stable_hash};
use crate::scoring::Model;

/// One arm: a name, the version that answers for it, and its share of customers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    pub name: String,
    pub version: String,
    pub weight: u32,
}

/// The arm for `customer_id`, or `None` when no arm has weight. Arms keep their listed order,
/// so changing one weight moves only the customers at the boundary it shifts.
pub fn assign<'a>(arms: &'a [Arm], salt: &str, customer_id: &str) -> Option<&'a Arm> {
    assign_index(arms, salt, customer_id).map(|i| &arms[i])
}

/// [`assign`], as the arm's index.
pub fn assign_index(arms: &[Arm], salt: &str, customer_id: &str) -> Option<usize> {
    let total: u64 = arms.iter().map(|a| u64::from(a.weight)).sum();
    if total == 0 {
        return None;
    }
    // Multiply-shift maps the 64-bit hash onto [0, total) without modulo bias.
    let point = ((u128::from(stable_hash(salt, customer_id)) * u128::from(total)) >> 64) as u64;
    let mut upper = 0u64;
    arms.iter().position(|a| {
        upper += u64::from(a.weight);
        point < upper
    })
}

/// The arm name reported for customers in an experiment's holdout (no model score).
pub const HOLDOUT_ARM: &str = "holdout";

/// An experiment: arms by weight, shadow versions scored only to be measured, and a share of
/// customers held out of model scoring altogether.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    pub name: String,
    /// Assignment is hash(salt, customer id): a new salt reshuffles every customer.
    pub salt: String,
    pub arms: Vec<Arm>,
    #[serde(default)]
    pub shadow: Vec<String>,
    /// Share of customers, in [0, 1), who get no model score.
    #[serde(default)]
    pub holdout: f64,
}

impl Experiment {
    /// Every version the experiment needs loaded: arms first, then shadows, no repeats.
    pub fn versions(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.arms
            .iter()
            .map(|a| a.version.clone())
            .chain(self.shadow.iter().cloned())
            .filter(|v| seen.insert(v.clone()))
            .collect()
    }

    /// Checks what can be checked without the store; the error names the field.
    pub fn validate(&self) -> Result<(), ExperimentError> {
        let bad = |field: String, problem: String| Err(ExperimentError { field, problem });
        const NAME_RULE: &str = "letters, digits, '.', '_' and '-' only";
        if !is_id(&self.name) {
            return bad("name".into(), format!("{:?}: {NAME_RULE}", self.name));
        }
        if self.salt.is_empty() {
            return bad("salt".into(), "is empty".into());
        }
        if self.arms.is_empty() {
            return bad("arms".into(), "an experiment needs at least one arm".into());
        }
        let mut names = HashSet::new();
        for (i, a) in self.arms.iter().enumerate() {
            let field = |f: &str| format!("arms[{i}].{f}");
            if !is_id(&a.name) || a.name == HOLDOUT_ARM {
                return bad(
                    field("name"),
                    format!("{:?}: {NAME_RULE}, and not {HOLDOUT_ARM:?}", a.name),
                );
            }
            if !names.insert(a.name.as_str()) {
                return bad(field("name"), format!("arm {:?} is listed twice", a.name));
            }
            if !is_id(&a.version) {
                return bad(
                    field("version"),
                    format!("{:?} is not a version id", a.version),
                );
            }
            if a.weight > MAX_WEIGHT {
                return bad(
                    field("weight"),
                    format!("{} is above {MAX_WEIGHT}", a.weight),
                );
            }
        }
        if self.arms.iter().all(|a| a.weight == 0) {
            return bad("arms".into(), "every weight is 0".into());
        }
        for (i, v) in self.shadow.iter().enumerate() {
            if !is_id(v) {
                return bad(format!("shadow[{i}]"), format!("{v:?} is not a version id"));
            }
            if self.shadow[..i].contains(v) {
                return bad(
                    format!("shadow[{i}]"),
                    format!("version {v} is listed twice"),
                );
            }
        }
        if !(0.0..1.0).contains(&self.holdout) {
            return bad(
                "holdout".into(),
                format!("{} is not a share in [0, 1)", self.holdout),
            );
        }
        Ok(())
    }
}

/// Largest weight of one arm (weights are relative; this keeps their sum far from overflow).
const MAX_WEIGHT: u32 = 1_000_000;

/// Why an experiment is not valid: the field (`arms[1].weight`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ExperimentError {
    pub field: String,
    pub problem: String,
}

/// Why a routing could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoutingError {
    #[error("experiment: {0}")]
    Invalid(#[from] ExperimentError),
    #[error("version {0} is not loaded")]
    NotLoaded(String),
}

/// Names and version ids become object-store path segments.
fn is_id(s: &str) -> bool {
    crate::model::is_safe_name(s)
}

/// Where one customer goes.
#[derive(Debug, Clone, Copy)]
pub enum Route<'a> {
    /// Scored by this arm's model.
    Arm { arm: &'a str, model: &'a Arc<Model> },
    /// In the holdout: no model score.
    Holdout,
}

/// A running experiment with every version it needs loaded: what a server routes by.
#[derive(Debug)]
pub struct Routing {
    /// The traffic record this was built from.
    pub seq: u64,
    pub experiment: String,
    salt: String,
    holdout_salt: String,
    holdout: f64,
    arms: Vec<Arm>,
    /// `models[i]` answers for `arms[i]`.
    models: Vec<Arc<Model>>,
    /// Scored off the request path, only measured.
    pub shadows: Vec<Arc<Model>>,
}

impl Routing {
    /// `model(version)` gives each loaded version the experiment names.
    pub fn new(
        seq: u64,
        e: &Experiment,
        mut model: impl FnMut(&str) -> Option<Arc<Model>>,
    ) -> Result<Self, RoutingError> {
        e.validate()?;
        let mut get = |v: &str| model(v).ok_or_else(|| RoutingError::NotLoaded(v.to_string()));
        let models = e
            .arms
            .iter()
            .map(|a| get(&a.version))
            .collect::<Result<Vec<_>, _>>()?;
        let shadows = e
            .shadow
            .iter()
            .map(|v| get(v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Routing {
            seq,
            experiment: e.name.clone(),
            salt: e.salt.clone(),
            // Holdout membership is drawn independently of the arm, with its own salt.
            holdout_salt: format!("{}/holdout", e.salt),
            holdout: e.holdout,
            arms: e.arms.clone(),
            models,
            shadows,
        })
    }

    /// The customer's route: sticky, since it depends only on the salt, the id and the weights.
    pub fn route(&self, customer_id: &str) -> Route<'_> {
        if self.holdout > 0.0
            && in_share(stable_hash(&self.holdout_salt, customer_id), self.holdout)
        {
            return Route::Holdout;
        }
        match assign_index(&self.arms, &self.salt, customer_id) {
            Some(i) => Route::Arm {
                arm: &self.arms[i].name,
                model: &self.models[i],
            },
            None => Route::Holdout,
        }
    }

    /// Any arm's model: the schema to check a held-out customer's input against.
    pub fn any_model(&self) -> &Arc<Model> {
        &self.models[0]
    }

    pub fn versions(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.iter().chain(self.shadows.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arms(weights: &[u32]) -> Vec<Arm> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Arm {
                name: format!("arm{i}"),
                version: format!("v{i}"),
                weight: w,
            })
            .collect()
    }

    fn ids() -> impl Iterator<Item = String> {
        (0..100_000).map(|i| format!("C{i:07}"))
    }

    /// 90/10 on 100,000 ids: the challenger's count is within four binomial standard
    /// deviations of 10,000, and every id gets the same arm on a second call.
    #[test]
    fn assignment_is_sticky_and_follows_the_weights() {
        let a = arms(&[90, 10]);
        let again = arms(&[90, 10]);
        let mut challenger = 0u64;
        for id in ids() {
            let arm = assign(&a, "exp-1", &id).unwrap();
            assert_eq!(arm, assign(&again, "exp-1", &id).unwrap(), "{id} moved");
            challenger += u64::from(arm.name == "arm1");
        }
        let (n, p) = (100_000f64, 0.1);
        let sd = (n * p * (1.0 - p)).sqrt();
        assert!(
            (challenger as f64 - n * p).abs() < 4.0 * sd,
            "challenger got {challenger} of 100000 (expected 10000 ± {:.0})",
            4.0 * sd
        );
    }

    #[test]
    fn three_arms_follow_their_weights() {
        let a = arms(&[50, 30, 20]);
        let mut counts = [0u64; 3];
        for id in ids() {
            let arm = assign(&a, "s", &id).unwrap();
            counts[arm.version[1..].parse::<usize>().unwrap()] += 1;
        }
        for (k, p) in [0.5f64, 0.3, 0.2].into_iter().enumerate() {
            let sd = (100_000.0 * p * (1.0 - p)).sqrt();
            assert!(
                (counts[k] as f64 - 100_000.0 * p).abs() < 4.0 * sd,
                "{counts:?}"
            );
        }
    }

    /// A new salt reshuffles: on a 50/50 split about half the customers change arm (an
    /// independent draw), far from none.
    #[test]
    fn a_new_salt_reshuffles_customers() {
        let a = arms(&[50, 50]);
        let moved = ids()
            .filter(|id| assign(&a, "salt-a", id).unwrap() != assign(&a, "salt-b", id).unwrap())
            .count() as f64;
        let sd = (100_000.0f64 * 0.25).sqrt();
        assert!(
            (moved - 50_000.0).abs() < 4.0 * sd,
            "{moved} of 100000 changed arm"
        );
    }

    #[test]
    fn no_weight_no_arm() {
        assert!(assign(&arms(&[0, 0]), "s", "C1").is_none());
        assert!(assign(&[], "s", "C1").is_none());
        assert_eq!(assign(&arms(&[0, 5]), "s", "C1").unwrap().name, "arm1");
    }
}

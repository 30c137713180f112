//! Experiment arms: which arm of an A/B test a customer falls in.
//!
//! The arm is a pure function of the experiment's salt, the customer id and the arm weights:
//! no state, no randomness at request time, so a customer lands in the same arm on every
//! request, replica and restart, and a new salt reshuffles everyone. Pure: no IO.

use crate::hashing::stable_hash;

/// One arm: a name, the version that answers for it, and its share of customers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arm {
    pub name: String,
    pub version: String,
    pub weight: u32,
}

/// The arm for `customer_id`, or `None` when no arm has weight. Arms keep their listed order,
/// so changing one weight moves only the customers at the boundary it shifts.
pub fn assign<'a>(arms: &'a [Arm], salt: &str, customer_id: &str) -> Option<&'a Arm> {
    let total: u64 = arms.iter().map(|a| u64::from(a.weight)).sum();
    if total == 0 {
        return None;
    }
    // Multiply-shift maps the 64-bit hash onto [0, total) without modulo bias.
    let point = ((u128::from(stable_hash(salt, customer_id)) * u128::from(total)) >> 64) as u64;
    let mut upper = 0u64;
    arms.iter().find(|a| {
        upper += u64::from(a.weight);
        point < upper
    })
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

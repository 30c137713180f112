//! [`FlatForest`]: every tree of a forest in one contiguous node array.
//!
//! Layout: a node is 16 bytes (threshold, feature, left child). smartcore pushes a node's
//! true child and then its false child, so the right child is always `left + 1` and needs no
//! field. A leaf has `feature == LEAF` and keeps its value in `threshold`, so the hot loop
//! touches one array. The mean target of every node (internal ones too) is kept apart in
//! `values`, only for reasons. Trees are summed in smartcore's order and divided by the tree
//! count, exactly as smartcore does, which makes predictions bit-identical.

use serde::{Deserialize, Serialize};

use super::{mirror, ForestError, Matrix};

/// smartcore sends `x <= t` to the true (left) child. Written as `!(x <= t)` rather than
/// `x > t` so that a NaN goes right exactly as in smartcore.
#[inline(always)]
#[allow(clippy::neg_cmp_op_on_partial_ord)]
fn goes_right(x: f64, t: f64) -> bool {
    !(x <= t)
}

/// Marks a leaf in [`FlatNode::feature`].
pub const LEAF: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[repr(C)]
pub struct FlatNode {
    /// Split threshold (`x <= threshold` goes left) or, for a leaf, the leaf value.
    pub threshold: f64,
    pub feature: u32,
    pub left: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlatForest {
    n_features: u32,
    roots: Vec<u32>,
    nodes: Vec<FlatNode>,
    /// Mean target of the training samples that reached each node.
    values: Vec<f64>,
}

/// A prediction split into the forest's mean (`bias`) and one additive part per feature,
/// following each tree's path: `bias + sum(features) == prediction` up to rounding.
#[derive(Debug, Clone, PartialEq)]
pub struct Contributions {
    pub bias: f64,
    pub features: Vec<f64>,
}

impl FlatForest {
    /// Compiles a fitted smartcore forest.
    pub(super) fn from_smartcore(
        rf: &super::train::SmartcoreForest,
        n_features: usize,
    ) -> Result<Self, ForestError> {
        let bytes = bincode::serialize(rf).map_err(|e| ForestError::Mirror(e.to_string()))?;
        let m: mirror::Regressor =
            bincode::deserialize(&bytes).map_err(|e| ForestError::Mirror(e.to_string()))?;
        let trees = m
            .forest_regressor
            .and_then(|f| f.trees)
            .ok_or_else(|| ForestError::Mirror("forest has no trees".into()))?;
        let mut out = FlatForest {
            n_features: n_features as u32,
            roots: Vec::with_capacity(trees.len()),
            nodes: Vec::new(),
            values: Vec::new(),
        };
        for tree in &trees {
            let base = out.nodes.len();
            out.roots.push(base as u32);
            for (i, n) in tree.nodes.iter().enumerate() {
                let node = match (n.true_child, n.false_child, n.split_value) {
                    (Some(t), Some(f), Some(v)) => {
                        if f != t + 1 || t <= i || f >= tree.nodes.len() {
                            return Err(ForestError::Mirror(format!(
                                "node {i} has children {t} and {f}; expected consecutive children after it"
                            )));
                        }
                        FlatNode {
                            threshold: v,
                            feature: n.split_feature as u32,
                            left: (base + t) as u32,
                        }
                    }
                    (None, None, _) => FlatNode {
                        threshold: n.output,
                        feature: LEAF,
                        left: 0,
                    },
                    _ => {
                        return Err(ForestError::Mirror(format!(
                            "node {i} has one child or no split value"
                        )))
                    }
                };
                out.nodes.push(node);
                out.values.push(n.output);
            }
        }
        out.validate()?;
        Ok(out)
    }

    /// Joins forests fitted on separate threads into one forest of all their trees.
    pub fn concat(parts: Vec<FlatForest>) -> Result<Self, ForestError> {
        let mut it = parts.into_iter();
        let mut out = it
            .next()
            .ok_or_else(|| ForestError::Malformed("no forest to join".into()))?;
        for p in it {
            if p.n_features != out.n_features {
                return Err(ForestError::Shape(
                    "joining forests of different widths".into(),
                ));
            }
            let base = out.nodes.len() as u32;
            out.roots.extend(p.roots.iter().map(|r| r + base));
            out.nodes.extend(p.nodes.iter().map(|n| FlatNode {
                left: if n.feature == LEAF { 0 } else { n.left + base },
                ..*n
            }));
            out.values.extend_from_slice(&p.values);
        }
        Ok(out)
    }

    /// Checks everything prediction relies on, so that a decoded artifact cannot make the hot
    /// loop index out of bounds or loop forever: children lie after their parent and inside
    /// the array, features inside the vector, numbers finite.
    pub fn validate(&self) -> Result<(), ForestError> {
        let n = self.nodes.len();
        if self.roots.is_empty() {
            return Err(ForestError::Malformed("no trees".into()));
        }
        if self.values.len() != n {
            return Err(ForestError::Malformed(
                "values and nodes differ in length".into(),
            ));
        }
        for (k, &r) in self.roots.iter().enumerate() {
            if r as usize >= n {
                return Err(ForestError::Malformed(format!(
                    "root of tree {k} is out of range"
                )));
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.threshold.is_finite() || !self.values[i].is_finite() {
                return Err(ForestError::Malformed(format!("node {i} is not finite")));
            }
            if node.feature != LEAF {
                if node.feature >= self.n_features {
                    return Err(ForestError::Malformed(format!(
                        "node {i} splits on feature {} of {}",
                        node.feature, self.n_features
                    )));
                }
                let l = node.left as usize;
                if l <= i || l + 1 >= n {
                    return Err(ForestError::Malformed(format!("node {i} has bad children")));
                }
            }
        }
        Ok(())
    }

    pub fn n_features(&self) -> usize {
        self.n_features as usize
    }

    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
    }

    #[inline]
    fn leaf_index(&self, root: u32, x: &[f64]) -> usize {
        let mut i = root as usize;
        loop {
            let n = &self.nodes[i];
            if n.feature == LEAF {
                return i;
            }
            i = n.left as usize + usize::from(goes_right(x[n.feature as usize], n.threshold));
        }
    }

    /// Predicts one row (`x.len() == n_features`).
    pub fn predict_row(&self, x: &[f64]) -> f64 {
        debug_assert_eq!(x.len(), self.n_features());
        let mut sum = 0.0;
        for &r in &self.roots {
            sum += self.nodes[self.leaf_index(r, x)].threshold;
        }
        sum / self.roots.len() as f64
    }

    /// Predicts every row, tree by tree: a tree's nodes stay in cache while all rows pass
    /// through it. Per row the sum runs in the same order as [`predict_row`], so results are
    /// identical.
    pub fn predict(&self, x: &Matrix) -> Vec<f64> {
        debug_assert_eq!(x.n_cols, self.n_features());
        let mut sums = vec![0.0; x.n_rows];
        for &r in &self.roots {
            for (row, s) in sums.iter_mut().enumerate() {
                *s += self.nodes[self.leaf_index(r, x.row(row))].threshold;
            }
        }
        let n = self.roots.len() as f64;
        sums.iter_mut().for_each(|s| *s /= n);
        sums
    }

    /// The mean-value path attribution of one prediction (Saabas): each split on a row's path
    /// credits its feature with the change in node mean it causes.
    pub fn contributions(&self, x: &[f64]) -> Contributions {
        let mut features = vec![0.0; self.n_features()];
        let mut bias = 0.0;
        for &r in &self.roots {
            let mut i = r as usize;
            bias += self.values[i];
            loop {
                let n = &self.nodes[i];
                if n.feature == LEAF {
                    break;
                }
                let next =
                    n.left as usize + usize::from(goes_right(x[n.feature as usize], n.threshold));
                features[n.feature as usize] += self.values[next] - self.values[i];
                i = next;
            }
        }
        let k = self.roots.len() as f64;
        features.iter_mut().for_each(|f| *f /= k);
        Contributions {
            bias: bias / k,
            features,
        }
    }
}

//! [`FlatForest`]: every tree of a forest in one contiguous node array.
//!
//! Layout: a node is 16 bytes (threshold, feature, left child). smartcore pushes a node's
//! true child and then its false child, so the right child is always `left + 1` and needs no
//! field. A leaf has `feature == LEAF` and keeps its value in `threshold`, so the hot loop
//! touches one array. The mean target of every node (internal ones too) is kept apart in
//! `values`, only for reasons. Trees are summed in smartcore's order and divided by the tree
//! count, exactly as smartcore does, which makes predictions bit-identical.
//!
//! Prediction walks a second copy of the nodes, built on first use and never stored, in which
//! a leaf points at itself and splits on a padding slot that always sends it "left": every
//! walk then takes a fixed number of steps with no exit test, so sixteen trees (or rows)
//! are walked in lockstep and their memory loads overlap. The leaf values are still added in
//! tree order, so the result does not change by a bit.

use std::sync::OnceLock;

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlatForest {
    n_features: u32,
    roots: Vec<u32>,
    nodes: Vec<FlatNode>,
    /// Mean target of the training samples that reached each node.
    values: Vec<f64>,
    /// The walking layout, derived from `nodes` on first use.
    #[serde(skip)]
    walk: OnceLock<Walk>,
}

/// The walking layout is derived, so it takes no part in equality.
impl PartialEq for FlatForest {
    fn eq(&self, other: &Self) -> bool {
        self.n_features == other.n_features
            && self.roots == other.roots
            && self.nodes == other.nodes
            && self.values == other.values
    }
}

/// Trees walked together: enough independent loads in flight to hide cache misses (16 beat 8
/// by 19% on one row, `cargo bench --bench scoring`).
const LANES: usize = 16;

/// The lockstep layout: leaves are fixed points (`left` is themselves, the split is on the
/// padding slot `n_features`, which holds -inf, so `x <= t` always holds and the walk stays).
/// A leaf keeps its value in `threshold`.
#[derive(Debug, Clone, PartialEq)]
struct Walk {
    nodes: Vec<FlatNode>,
    /// Steps that take every tree of group `g` (trees `g*LANES..`) to its leaf.
    group_depth: Vec<u32>,
    /// Steps that take tree `t` to its leaf.
    tree_depth: Vec<u32>,
}

/// A row with the padding slot appended, on the stack for the usual widths.
struct Padded {
    buf: [f64; 64],
    heap: Vec<f64>,
}

impl Padded {
    fn new(x: &[f64]) -> Self {
        let mut p = Padded {
            buf: [f64::NEG_INFINITY; 64],
            heap: Vec::new(),
        };
        if x.len() < 64 {
            p.buf[..x.len()].copy_from_slice(x);
        } else {
            p.heap = x.to_vec();
            p.heap.push(f64::NEG_INFINITY);
        }
        p
    }

    fn get(&self) -> &[f64] {
        if self.heap.is_empty() {
            &self.buf
        } else {
            &self.heap
        }
    }
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
            walk: OnceLock::new(),
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
        out.walk = OnceLock::new();
        Ok(out)
    }

    /// Builds the walking layout (see the module docs). Needs a validated forest.
    fn build_walk(&self) -> Walk {
        let pad = self.n_features;
        let mut depth = vec![0u32; self.nodes.len()];
        let mut nodes = self.nodes.clone();
        for (i, n) in nodes.iter_mut().enumerate() {
            if n.feature == LEAF {
                n.feature = pad;
                n.left = i as u32;
            } else {
                // Children lie after their parent (validated), so one forward pass suffices.
                let l = n.left as usize;
                depth[l] = depth[i] + 1;
                depth[l + 1] = depth[i] + 1;
            }
        }
        // Each tree's nodes run from its root to the next tree's root.
        let mut bounds: Vec<usize> = self.roots.iter().map(|&r| r as usize).collect();
        bounds.push(self.nodes.len());
        let tree_depth: Vec<u32> = bounds
            .windows(2)
            .map(|w| depth[w[0]..w[1]].iter().copied().max().unwrap_or(0))
            .collect();
        Walk {
            nodes,
            group_depth: tree_depth
                .chunks(LANES)
                .map(|c| c.iter().copied().max().unwrap_or(0))
                .collect(),
            tree_depth,
        }
    }

    fn walk(&self) -> &Walk {
        self.walk.get_or_init(|| self.build_walk())
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
            if r as usize >= n || (k > 0 && r <= self.roots[k - 1]) {
                return Err(ForestError::Malformed(format!(
                    "root of tree {k} is out of range or out of order"
                )));
            }
        }
        if self.n_features == LEAF {
            return Err(ForestError::Malformed("too many features".into()));
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

    /// Predicts one row (`x.len() == n_features`).
    pub fn predict_row(&self, x: &[f64]) -> f64 {
        debug_assert_eq!(x.len(), self.n_features());
        let walk = self.walk();
        let padded = Padded::new(x);
        let x = padded.get();
        let nodes = &walk.nodes[..];
        let mut sum = 0.0;
        for (group, roots) in self.roots.chunks(LANES).enumerate() {
            let mut at = [0usize; LANES];
            for (a, &r) in at.iter_mut().zip(roots) {
                *a = r as usize;
            }
            let at = &mut at[..roots.len()];
            for _ in 0..walk.group_depth[group] {
                for a in at.iter_mut() {
                    let n = &nodes[*a];
                    *a = n.left as usize
                        + usize::from(goes_right(x[n.feature as usize], n.threshold));
                }
            }
            // Tree order within and across groups: the same sum as smartcore's.
            for &a in at.iter() {
                sum += nodes[a].threshold;
            }
        }
        sum / self.roots.len() as f64
    }

    /// Predicts every row, tree by tree (a tree's nodes stay in cache while the rows pass
    /// through it, sixteen rows in lockstep). Per row the sum runs in tree order, as in
    /// [`predict_row`], so results are identical.
    pub fn predict(&self, x: &Matrix) -> Vec<f64> {
        debug_assert_eq!(x.n_cols, self.n_features());
        let walk = self.walk();
        let nodes = &walk.nodes[..];
        let width = x.n_cols + 1;
        let mut padded = Vec::with_capacity(x.n_rows * width);
        for r in 0..x.n_rows {
            padded.extend_from_slice(x.row(r));
            padded.push(f64::NEG_INFINITY);
        }
        let mut sums = vec![0.0; x.n_rows];
        for (t, &root) in self.roots.iter().enumerate() {
            let depth = walk.tree_depth[t];
            for (block, s) in sums.chunks_mut(LANES).enumerate() {
                let mut at = [root as usize; LANES];
                let mut row = [0usize; LANES];
                for (k, r) in row.iter_mut().enumerate() {
                    *r = (block * LANES + k) * width;
                }
                let at = &mut at[..s.len()];
                for _ in 0..depth {
                    for (a, &r) in at.iter_mut().zip(&row) {
                        let n = &nodes[*a];
                        let v = padded[r + n.feature as usize];
                        *a = n.left as usize + usize::from(goes_right(v, n.threshold));
                    }
                }
                for (s, &a) in s.iter_mut().zip(at.iter()) {
                    *s += nodes[a].threshold;
                }
            }
        }
        let n = self.roots.len() as f64;
        sums.iter_mut().for_each(|s| *s /= n);
        sums
    }

    /// The mean-value path attribution of one prediction (Saabas): each split on a row's path
    /// credits its feature with the change in node mean it causes.
    pub fn contributions(&self, x: &[f64]) -> Contributions {
        let walk = self.walk();
        let padded = Padded::new(x);
        let x = padded.get();
        let nodes = &walk.nodes[..];
        // One slot more for the padding feature, which leaves "split" on at no change.
        let mut features = vec![0.0; self.n_features() + 1];
        let mut bias = 0.0;
        for (group, roots) in self.roots.chunks(LANES).enumerate() {
            let mut at = [0usize; LANES];
            for (a, &r) in at.iter_mut().zip(roots) {
                *a = r as usize;
                bias += self.values[*a];
            }
            let at = &mut at[..roots.len()];
            for _ in 0..walk.group_depth[group] {
                for a in at.iter_mut() {
                    let n = &nodes[*a];
                    let next = n.left as usize
                        + usize::from(goes_right(x[n.feature as usize], n.threshold));
                    features[n.feature as usize] += self.values[next] - self.values[*a];
                    *a = next;
                }
            }
        }
        features.truncate(self.n_features());
        let k = self.roots.len() as f64;
        features.iter_mut().for_each(|f| *f /= k);
        Contributions {
            bias: bias / k,
            features,
        }
    }

    /// Mean decrease in impurity per feature, as shares of the total: `x`, `y` are sent down
    /// every tree, and each split credits its feature with the squared error it removes
    /// from the rows that reach it. (smartcore keeps no per-node counts, so the rows given
    /// stand in for each tree's bootstrap sample.) All zeros when no split removes any.
    pub fn impurity_importance(&self, x: &Matrix, y: &[f64]) -> Vec<f64> {
        // (rows, sum, sum of squares) of the rows reaching each node.
        let mut acc = vec![(0.0f64, 0.0f64, 0.0f64); self.nodes.len()];
        for (i, &yi) in y.iter().enumerate().take(x.n_rows) {
            let row = x.row(i);
            for &root in &self.roots {
                let mut at = root as usize;
                loop {
                    let a = &mut acc[at];
                    a.0 += 1.0;
                    a.1 += yi;
                    a.2 += yi * yi;
                    let n = &self.nodes[at];
                    if n.feature == LEAF {
                        break;
                    }
                    at = n.left as usize
                        + usize::from(goes_right(row[n.feature as usize], n.threshold));
                }
            }
        }
        let sse = |(n, s, q): (f64, f64, f64)| if n > 0.0 { q - s * s / n } else { 0.0 };
        let mut out = vec![0.0; self.n_features()];
        for (i, n) in self.nodes.iter().enumerate() {
            if n.feature != LEAF {
                let l = n.left as usize;
                let gain = sse(acc[i]) - sse(acc[l]) - sse(acc[l + 1]);
                out[n.feature as usize] += gain.max(0.0);
            }
        }
        let total: f64 = out.iter().sum();
        if total > 0.0 {
            out.iter_mut().for_each(|v| *v /= total);
        }
        out
    }
}

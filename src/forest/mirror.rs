//! Our mirror of smartcore 0.7.0's private forest layout, read through its serde output.
//!
//! smartcore keeps trees and nodes private; with its `serde` feature the fitted forest
//! serialises them. bincode is not self-describing, so these structs repeat smartcore's field
//! order exactly (zero-sized `PhantomData` fields included). That is private API: smartcore
//! is pinned with `=0.7.0`, and the bit-identity test in `flat.rs` fails on any drift.

use std::marker::PhantomData;

use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct Regressor {
    pub forest_regressor: Option<Forest>,
}

#[derive(Deserialize)]
pub(super) struct Forest {
    pub trees: Option<Vec<Tree>>,
    #[allow(dead_code)]
    pub num_features: Option<usize>,
    #[allow(dead_code)]
    pub samples: Option<Vec<Vec<bool>>>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
pub(super) struct Tree {
    pub nodes: Vec<Node>,
    parameters: Option<TreeParameters>,
    depth: u16,
    root_mass: f64,
    _tx: PhantomData<()>,
    _ty: PhantomData<()>,
    _x: PhantomData<()>,
    _y: PhantomData<()>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct TreeParameters {
    max_depth: Option<u16>,
    min_samples_leaf: usize,
    min_samples_split: usize,
    seed: Option<u64>,
    splitter: Splitter,
}

#[allow(dead_code)]
#[derive(Deserialize)]
enum Splitter {
    Random,
    Best,
}

#[allow(dead_code)]
#[derive(Deserialize)]
pub(super) struct Node {
    pub output: f64,
    pub split_feature: usize,
    pub split_value: Option<f64>,
    split_score: Option<f64>,
    pub true_child: Option<usize>,
    pub false_child: Option<usize>,
}

//! The flat forest against smartcore's own predict, bit for bit.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smartcore::linalg::basic::matrix::DenseMatrix;

use super::*;

fn data(n: usize, cols: usize, seed: u64, binary: bool) -> (Matrix, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut m = Matrix::new(cols);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let row: Vec<f64> = (0..cols)
            .map(|c| {
                // Some integer-valued columns: many ties at thresholds, like purchase counts.
                if c % 3 == 0 {
                    f64::from(rng.random_range(0..6u32))
                } else {
                    rng.random_range(-3.0..3.0)
                }
            })
            .collect();
        let signal = row[0] * 0.7 + (row[1] * 2.0).sin() + row[2] * row[3] * 0.2;
        let noisy = signal + rng.random_range(-0.5..0.5);
        y.push(if binary {
            f64::from(u8::from(noisy > 1.0))
        } else {
            noisy
        });
        m.push_row(&row);
    }
    (m, y)
}

fn dense(m: &Matrix) -> DenseMatrix<f64> {
    DenseMatrix::new(m.n_rows, m.n_cols, m.values.clone(), false).unwrap()
}

#[test]
fn flat_forest_predicts_bit_identically_to_smartcore() {
    let cases = [
        (false, None, 1, 2),
        (true, Some(8), 5, 7),
        (false, Some(12), 20, 11),
        (true, None, 1, 13),
    ];
    for (binary, max_depth, min_samples_leaf, seed) in cases {
        let (x, y) = data(2_000, 9, seed, binary);
        let params = ForestParams {
            n_trees: 25,
            max_depth,
            min_samples_leaf,
            seed,
            ..ForestParams::default()
        };
        let tm = TrainingMatrix::new(&x).unwrap();
        let rf = smartcore_forest(&tm, &y, &params).unwrap();
        let flat = FlatForest::compile(&rf, x.n_cols).unwrap();
        let (test, _) = data(5_000, 9, seed + 100, binary);
        let expected = rf.predict(&dense(&test)).unwrap();
        let batch = flat.predict(&test);
        for i in 0..test.n_rows {
            let one = flat.predict_row(test.row(i));
            assert_eq!(
                one.to_bits(),
                expected[i].to_bits(),
                "row {i}, case seed {seed}"
            );
            assert_eq!(batch[i].to_bits(), expected[i].to_bits(), "batch row {i}");
        }
        // The training rows too: they hit thresholds exactly.
        let on_train = rf.predict(&dense(&x)).unwrap();
        for (i, expected) in on_train.iter().enumerate() {
            assert_eq!(flat.predict_row(x.row(i)).to_bits(), expected.to_bits());
        }
    }
}

#[test]
fn contributions_add_up_to_the_prediction() {
    let (x, y) = data(1_500, 6, 3, false);
    let tm = TrainingMatrix::new(&x).unwrap();
    let f = fit_forest(
        &tm,
        &y,
        &ForestParams {
            n_trees: 12,
            ..Default::default()
        },
        2,
        &|_| {},
    )
    .unwrap();
    for i in 0..200 {
        let c = f.contributions(x.row(i));
        let total = c.bias + c.features.iter().sum::<f64>();
        assert!((total - f.predict_row(x.row(i))).abs() < 1e-9);
    }
    // The feature that drives y gets the largest credit on average.
    let mut credit = vec![0.0; 6];
    for i in 0..500 {
        for (c, v) in credit.iter_mut().zip(f.contributions(x.row(i)).features) {
            *c += v.abs();
        }
    }
    let top = (0..6)
        .max_by(|&a, &b| credit[a].total_cmp(&credit[b]))
        .unwrap();
    assert!(top <= 1, "top feature {top}, credits {credit:?}");
}

#[test]
fn parallel_fit_is_deterministic_and_counts_trees() {
    let (x, y) = data(800, 5, 4, true);
    let tm = TrainingMatrix::new(&x).unwrap();
    let params = ForestParams {
        n_trees: 23,
        ..Default::default()
    };
    let done = std::sync::atomic::AtomicUsize::new(0);
    let a = fit_forest(&tm, &y, &params, 2, &|n| {
        done.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    })
    .unwrap();
    let b = fit_forest(&tm, &y, &params, 1, &|_| {}).unwrap();
    assert_eq!(a, b, "thread count must not change the forest");
    assert_eq!(a.n_trees(), 23);
    assert_eq!(done.into_inner(), 23);
    let c = fit_forest(&tm, &y, &ForestParams { seed: 99, ..params }, 2, &|_| {}).unwrap();
    assert_ne!(a, c, "another seed gives another forest");
    for i in 0..x.n_rows {
        let p = a.predict_row(x.row(i));
        assert!((0.0..=1.0).contains(&p));
    }
}

#[test]
fn non_finite_values_never_reach_smartcore() {
    let (mut x, mut y) = data(50, 4, 5, false);
    x.values[2 * 4 + 3] = f64::NAN;
    match TrainingMatrix::new(&x) {
        Err(ForestError::NonFinite { row: 2, col: 3 }) => {}
        other => panic!("expected NonFinite at 2,3, got {other:?}"),
    }
    x.values[2 * 4 + 3] = 0.0;
    y[7] = f64::INFINITY;
    let tm = TrainingMatrix::new(&x).unwrap();
    assert!(matches!(
        fit_forest(&tm, &y, &ForestParams::default(), 2, &|_| {}),
        Err(ForestError::NonFiniteTarget { row: 7 })
    ));
}

#[test]
fn impurity_importance_sums_to_one_and_credits_the_signal_not_noise() {
    let (x, y) = data(2_000, 6, 5, false);
    let tm = TrainingMatrix::new(&x).unwrap();
    let f = fit_forest(
        &tm,
        &y,
        &ForestParams {
            n_trees: 10,
            ..Default::default()
        },
        2,
        &|_| {},
    )
    .unwrap();
    let imp = f.impurity_importance(&x, &y);
    assert_eq!(imp.len(), 6);
    assert!((imp.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{imp:?}");
    // y is built from columns 0-3; columns 4 and 5 are noise.
    assert!(imp[0] > imp[4] && imp[0] > imp[5], "{imp:?}");
    assert!(imp[1] > imp[4] && imp[1] > imp[5], "{imp:?}");
    // A constant target: no split removes error.
    assert!(f
        .impurity_importance(&x, &vec![1.0; y.len()])
        .iter()
        .all(|&v| v == 0.0));
}

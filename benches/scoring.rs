//! Criterion benches of the scoring core: features from a 50-purchase history, the flat forest
//! against smartcore's own predict (1 row and 10,000 rows), and a full score with and without
//! reasons. `cargo bench --bench scoring`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use smartcore::linalg::basic::matrix::DenseMatrix;

use loyalscore::features::{CustomerSummary, Transaction, DAY};
use loyalscore::forest::{smartcore_forest, FlatForest, ForestParams, Matrix, TrainingMatrix};
use loyalscore::scoring::{score, Explain, Model};
use loyalscore::trainer::dataset::{build_rows, everyone, keep_all};
use loyalscore::trainer::generate::{generate, GenerateOptions};
use loyalscore::trainer::{
    load_transactions, train, FitOptions, LoadOptions, Overrides, RunInfo, Silent,
};

struct Setup {
    model: Model,
    rows: Matrix,
    smartcore: loyalscore::forest::SmartcoreForestRegressor,
    flat: FlatForest,
}

/// A production-shaped model (100 + 100 trees, depth 12) trained on generated customers.
fn setup() -> Setup {
    let opts = GenerateOptions {
        customers: 6_000,
        seed: 3,
        start: 1_672_531_200,
        days: 1095,
    };
    let mut buf = Vec::new();
    generate(&opts, &mut buf, &|_| {}).unwrap();
    let log = load_transactions(&buf[..], "bench", &LoadOptions::default(), |_| {}).unwrap();
    let fixed = Overrides {
        max_depth: Some(Some(12)),
        min_samples_leaf: Some(20),
    };
    let fit = FitOptions {
        churn: fixed.clone(),
        clv: fixed,
        force: true,
        ..FitOptions::default()
    };
    let run = RunInfo {
        args: vec![],
        created_at: chrono::Utc::now(),
    };
    let t = train(&log, &fit, &run, &Silent).unwrap();
    let model = Model::new(t.manifest, t.bundle).unwrap();
    let as_of = (log.quality.last_ts / DAY - 180) * DAY;
    let r = build_rows(
        &log,
        &[as_of],
        180 * DAY,
        365 * DAY,
        &everyone,
        &keep_all,
        &Silent,
    )
    .unwrap();
    let mut rows = Matrix::new(r.x.n_cols);
    for i in 0..10_000 {
        rows.push_row(r.x.row(i % r.len()));
    }
    // smartcore's own forest of the same shape on the same rows, and its flat compilation.
    let params = ForestParams {
        n_trees: 100,
        max_depth: Some(12),
        min_samples_leaf: 20,
        ..Default::default()
    };
    let tm = TrainingMatrix::new(&r.x).unwrap();
    let smartcore = smartcore_forest(&tm, &r.churn_target(), &params).unwrap();
    let flat = FlatForest::compile(&smartcore, r.x.n_cols).unwrap();
    Setup {
        model,
        rows,
        smartcore,
        flat,
    }
}

fn dense(m: &Matrix, n: usize) -> DenseMatrix<f64> {
    DenseMatrix::new(n, m.n_cols, m.values[..n * m.n_cols].to_vec(), false).unwrap()
}

fn benches(c: &mut Criterion) {
    let s = setup();

    let history: Vec<Transaction> = (0..50)
        .map(|i| Transaction {
            ts: 1_700_000_000 + i * 9 * DAY,
            amount: 20.0 + i as f64,
            points_earned: 20.0,
            points_redeemed: 0.0,
            channel: 1 + (i % 2) as u32,
        })
        .collect();
    let as_of = 1_700_000_000 + 500 * DAY;
    c.bench_function("features/history_of_50", |b| {
        b.iter(|| {
            CustomerSummary::from_transactions(black_box(&history))
                .unwrap()
                .features(as_of)
                .unwrap()
        })
    });

    let mut g = c.benchmark_group("predict_100_trees");
    g.throughput(Throughput::Elements(1));
    let one = dense(&s.rows, 1);
    g.bench_function(BenchmarkId::new("smartcore", 1), |b| {
        b.iter(|| s.smartcore.predict(black_box(&one)).unwrap())
    });
    g.bench_function(BenchmarkId::new("flat", 1), |b| {
        b.iter(|| s.flat.predict_row(black_box(s.rows.row(0))))
    });
    g.throughput(Throughput::Elements(10_000));
    let many = dense(&s.rows, 10_000);
    g.bench_function(BenchmarkId::new("smartcore", 10_000), |b| {
        b.iter(|| s.smartcore.predict(black_box(&many)).unwrap())
    });
    g.bench_function(BenchmarkId::new("flat", 10_000), |b| {
        b.iter(|| s.flat.predict(black_box(&s.rows)))
    });
    g.finish();

    let mut g = c.benchmark_group("score_both_forests");
    let explain = Explain {
        reasons: true,
        ..Explain::default()
    };
    let mut f = [0.0; loyalscore::features::N_FEATURES];
    f.copy_from_slice(s.rows.row(7));
    g.bench_function("reasons_off", |b| {
        b.iter(|| score(&s.model, black_box(&f), as_of, Explain::default()))
    });
    g.bench_function("reasons_on", |b| {
        b.iter(|| score(&s.model, black_box(&f), as_of, explain))
    });
    // What the server does per answer: score, then count the row for drift.
    assert!(
        s.model.drift.is_some(),
        "the fitted version has a training profile"
    );
    g.bench_function("reasons_off_and_drift", |b| {
        b.iter(|| {
            let r = score(&s.model, black_box(&f), as_of, Explain::default());
            s.model.served(&f, &r, as_of);
            r
        })
    });
    g.finish();
}

criterion_group! {
    name = scoring;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(scoring);

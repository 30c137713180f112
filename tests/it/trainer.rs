//! The trainer end to end: the real binary on generated data, the artifact it writes, and
//! whether the model finds the drifters the generator planted.

use std::collections::{HashMap, HashSet};

use loyalscore::features::DAY;
use loyalscore::forest::{fit_forest, ForestParams, TrainingMatrix};
use loyalscore::registry::Registry;
use loyalscore::trainer::dataset::{build_rows, everyone, feature_index, keep_all};
use loyalscore::trainer::generate::Kind;
use loyalscore::trainer::plan_split;
use loyalscore::trainer::{load_transactions, FitOptions, LoadOptions, Silent, Split};

use crate::support::{files_below, sample, text, train_cli};

/// `fit --promote` (what the chart's CronJob runs, no shell) moves the alias itself, with
/// the reason and actor in its history, by compare-and-swap from where it pointed before.
#[test]
fn fit_promote_moves_the_alias_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = sample(dir.path(), 2_000, 900, 5);
    let reg = dir.path().join("registry");
    let fit = |extra: &[&str]| {
        let mut args = vec![
            "fit",
            "--transactions",
            csv.to_str().unwrap(),
            "--registry",
            reg.to_str().unwrap(),
            "--trees",
            "10",
            "--json",
        ];
        args.extend(extra);
        train_cli(&args)
    };
    let promote = [
        "--promote",
        "production",
        "--reason",
        "nightly",
        "--actor",
        "cron",
    ];
    let mut versions = Vec::new();
    for seed in ["1", "2"] {
        let mut extra = promote.to_vec();
        extra.extend(["--seed", seed]);
        let out = fit(&extra);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["promoted"], "production", "{json}");
        versions.push(json["version"].as_str().unwrap().to_string());
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let registry = Registry::open(reg.to_str().unwrap()).unwrap();
    let history = rt.block_on(registry.alias_history("production")).unwrap();
    let moves: Vec<_> = history
        .iter()
        .map(|r| {
            (
                r.version.clone(),
                r.previous.clone(),
                r.actor.as_str(),
                r.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        vec![
            (versions[0].clone(), None, "cron", "nightly"),
            (
                versions[1].clone(),
                Some(versions[0].clone()),
                "cron",
                "nightly"
            ),
        ]
    );
    // Refused before any training: without a reason, and with --dry-run.
    for (extra, needle) in [
        (&["--promote", "production"][..], "--reason"),
        (
            &["--promote", "production", "--reason", "r", "--dry-run"],
            "--dry-run",
        ),
    ] {
        let out = fit(extra);
        assert!(!out.status.success(), "{extra:?}");
        assert!(text(&out.stderr).contains(needle), "{}", text(&out.stderr));
    }
}

#[test]
fn fit_publishes_a_complete_version_without_customer_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, truth) = sample(dir.path(), 2_500, 900, 3);
    let reg = dir.path().join("registry");
    let out = train_cli(&[
        "fit",
        "--transactions",
        csv.to_str().unwrap(),
        "--registry",
        reg.to_str().unwrap(),
        "--trees",
        "20",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    for needle in [
        "rows read",
        "rows rejected",
        "duplicate rows",
        "customers",
        "date range",
        "ROC-AUC",
        "90-day rule",
        "Spearman",
        "last-H repeats",
    ] {
        assert!(
            stdout.contains(needle),
            "output lacks {needle:?}:\n{stdout}"
        );
    }
    let version = stdout
        .lines()
        .find_map(|l| l.strip_prefix("published version "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no version in {stdout}"))
        .to_string();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let registry = Registry::open(reg.to_str().unwrap()).unwrap();
    let (manifest, bundle) = rt.block_on(registry.load(&version)).unwrap();
    assert_eq!(manifest.version, version);
    assert_eq!(manifest.split.method, "out_of_time");
    assert_eq!(manifest.hyperparameters.selected_by, "grid");
    assert!(!manifest.hyperparameters.grid.is_empty());
    assert_eq!(manifest.data.customers, 2_500);
    assert_eq!(manifest.data.sha256.len(), 64);
    assert_eq!(bundle.churn.n_trees(), 20);
    assert_eq!(
        manifest.feature_schema.names.len(),
        bundle.churn.n_features()
    );
    let listed = rt.block_on(registry.list_versions()).unwrap();
    assert_eq!(listed.versions.len(), 1);

    // No customer id anywhere in the registry: look for every id in every file's bytes.
    let ids: HashSet<&[u8]> = truth.iter().map(|t| t.id.as_bytes()).collect();
    let width = truth[0].id.len();
    let files = files_below(&reg);
    let names: Vec<_> = files
        .iter()
        .filter_map(|f| f.file_name()?.to_str())
        .collect();
    assert_eq!(
        names,
        [
            "evaluation.json",
            "manifest.json",
            "model.bin",
            "report.html"
        ],
        "{files:?}"
    );
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let hit = bytes.windows(width).find(|w| ids.contains(w));
        assert!(hit.is_none(), "{} holds a customer id", f.display());
    }
}

#[test]
fn dry_run_and_short_data_use_a_holdout_and_publish_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // 400 days with a 180-day horizon cannot hold a training snapshot before the validation one.
    let (csv, _) = sample(dir.path(), 1_500, 400, 4);
    let reg = dir.path().join("registry");
    let out = train_cli(&[
        "fit",
        "--transactions",
        csv.to_str().unwrap(),
        "--registry",
        reg.to_str().unwrap(),
        "--trees",
        "10",
        "--churn-max-depth",
        "10",
        "--churn-min-samples-leaf",
        "20",
        "--clv-max-depth",
        "10",
        "--clv-min-samples-leaf",
        "20",
        "--dry-run",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("customer_hash_holdout"), "{stdout}");
    assert!(stdout.contains("set by flags"), "{stdout}");
    assert!(stdout.contains("dry run: nothing published"), "{stdout}");
    assert!(files_below(&reg).is_empty());
}

#[test]
fn a_stopped_run_publishes_nothing_and_names_the_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = sample(dir.path(), 300, 400, 5);
    let mut content = std::fs::read_to_string(&csv).unwrap();
    let lines = content.lines().count();
    // 5 % bad rows, well past the 1 % default.
    for i in 0..(lines / 20) {
        content.push_str(&format!("X{i},2024-02-30,1.0,0,0,web,1\n"));
    }
    std::fs::write(&csv, content).unwrap();
    let reg = dir.path().join("registry");
    let out = train_cli(&[
        "fit",
        "--transactions",
        csv.to_str().unwrap(),
        "--registry",
        reg.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("line {}: timestamp \"2024-02-30\"", lines + 1)),
        "{stderr}"
    );
    assert!(stderr.contains("more than the allowed 1.00%"), "{stderr}");
    assert!(files_below(&reg).is_empty());
}

#[test]
fn bad_flags_fail_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = sample(dir.path(), 200, 400, 6);
    let (csv, reg) = (csv.to_str().unwrap(), dir.path().join("r"));
    let missing = dir.path().join("missing.csv");
    let cases: [(Vec<&str>, &str); 3] = [
        (
            vec!["--transactions", csv, "--as-of", "2024-99-01"],
            "'2024-99-01' for '--as-of <AS_OF>': \"2024-99-01\" is neither YYYY-MM-DD",
        ),
        (
            vec![
                "--transactions",
                csv,
                "--as-of",
                "2023-12-01",
                "--horizon-days",
                "300",
            ],
            "labels need the whole horizon",
        ),
        (
            vec!["--transactions", missing.to_str().unwrap()],
            "missing.csv",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["fit", "--registry", reg.to_str().unwrap()];
        all.extend(args);
        let out = train_cli(&all);
        assert!(!out.status.success(), "{all:?}");
        assert!(
            text(&out.stderr).contains(needle),
            "{all:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(files_below(&reg).is_empty());
}

/// The generator knows who drifts away. Among customers who drifted in the 120 days before
/// the validation snapshot, the model's top-scored decile must hold more of them than the
/// top decile of the 90-day rule's ranking (longest since the last purchase first).
#[test]
fn model_finds_drifters_better_than_the_90_day_rule() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, truth) = sample(dir.path(), 8_000, 1095, 11);
    let log = load_transactions(
        std::fs::File::open(&csv).unwrap(),
        "sample",
        &LoadOptions::default(),
        |_| {},
    )
    .unwrap();
    let opts = FitOptions::default();
    let Split::OutOfTime {
        train, validation, ..
    } = plan_split(log.quality.first_ts, log.quality.last_ts, &opts.split).unwrap()
    else {
        panic!("three years of data allow an out-of-time split");
    };
    let validation = *validation.last().unwrap();
    let (h, lookback) = (180 * DAY, 365 * DAY);
    let rows =
        |at: &[i64]| build_rows(&log, at, h, lookback, &everyone, &keep_all, &Silent).unwrap();
    let (tr, va) = (rows(&train), rows(&[validation]));
    let params = ForestParams {
        n_trees: 40,
        max_depth: Some(12),
        min_samples_leaf: 20,
        ..Default::default()
    };
    let forest = fit_forest(
        &TrainingMatrix::new(&tr.x).unwrap(),
        &tr.churn_target(),
        &params,
        2,
        &|_| {},
    )
    .unwrap();
    let scores = forest.predict(&va.x);
    let rec = feature_index("recency_days");
    let recency: Vec<f64> = (0..va.len()).map(|i| va.x.row(i)[rec]).collect();

    let by_id: HashMap<&str, _> = truth.iter().map(|t| (t.id.as_str(), t)).collect();
    let drifted: Vec<bool> = va
        .cust
        .iter()
        .map(|&c| {
            let t = by_id[log.ids[c as usize].as_str()];
            t.kind == Kind::Drifter
                && t.event_ts
                    .is_some_and(|e| e < validation && e >= validation - 120 * DAY)
        })
        .collect();
    let n_drifted = drifted.iter().filter(|&&d| d).count();
    assert!(
        n_drifted > 50,
        "the sample should hold recent drifters, has {n_drifted}"
    );
    let recall = |s: &[f64]| {
        let mut idx: Vec<usize> = (0..s.len()).collect();
        idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        let top = &idx[..s.len() / 10];
        top.iter().filter(|&&i| drifted[i]).count() as f64 / n_drifted as f64
    };
    let (model, rule) = (recall(&scores), recall(&recency));
    eprintln!("recall of recent drifters in the top decile: model {model:.3}, 90-day rule {rule:.3} ({n_drifted} drifters)");
    assert!(model > rule, "model {model:.3} vs rule {rule:.3}");
}

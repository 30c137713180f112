//! The promotion gate (`fit --gate-alias`): the candidate against the alias's version on the
//! validation rows after that version's data ended, on generated data.

use loyalscore::registry::Registry;

use crate::support::{sample, text, train_cli};

/// The log's rows before `cut` (an RFC 3339 prefix compares as text).
fn before(csv: &std::path::Path, cut: &str, out: &std::path::Path) {
    let text = std::fs::read_to_string(csv).unwrap();
    let mut lines = text.lines();
    let mut kept = vec![lines.next().unwrap()];
    kept.extend(lines.filter(|l| l.split(',').nth(1).is_some_and(|t| t < cut)));
    std::fs::write(out, kept.join("\n") + "\n").unwrap();
}

#[test]
fn the_gate_refuses_a_worse_candidate_accepts_a_better_one_and_waits_for_fair_rows() {
    let dir = tempfile::tempdir().unwrap();
    // 900 days from 2023-01-01 (to 2025-06-19); production sees the first 700 (to
    // 2024-12-01), so the candidate's latest validation snapshot (the end minus 180 days,
    // 2024-12-21) holds rows production never saw.
    let (csv, _) = sample(dir.path(), 2_000, 900, 5);
    let early = dir.path().join("early.csv");
    before(&csv, "2024-12-01", &early);
    let reg = dir.path().join("registry");
    let fit = |data: &std::path::Path, recipe: &[&str], extra: &[&str]| {
        let mut args = vec!["fit", "--transactions", data.to_str().unwrap()];
        args.extend([
            "--registry",
            reg.to_str().unwrap(),
            "--reason",
            "nightly",
            "--force",
        ]);
        args.extend([
            "--churn-min-samples-leaf",
            "20",
            "--clv-min-samples-leaf",
            "20",
        ]);
        args.extend(recipe);
        args.extend(extra);
        train_cli(&args)
    };
    let gated = ["--gate-alias", "production", "--promote", "production"];
    let weak = [
        "--trees",
        "3",
        "--churn-max-depth",
        "2",
        "--clv-max-depth",
        "2",
    ];
    let stumps = [
        "--trees",
        "1",
        "--churn-max-depth",
        "1",
        "--clv-max-depth",
        "1",
    ];
    let strong = [
        "--trees",
        "20",
        "--churn-max-depth",
        "8",
        "--clv-max-depth",
        "8",
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let registry = Registry::open(reg.to_str().unwrap()).unwrap();
    let production = || {
        rt.block_on(registry.alias("production"))
            .unwrap()
            .unwrap()
            .version
    };
    let versions = || {
        rt.block_on(registry.list_versions())
            .unwrap()
            .versions
            .len()
    };

    let out = fit(&early, &weak, &gated);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("alias production does not exist yet"));
    let first = production();

    // Stumps rank worse than production on the rows it never saw: refused, nothing published.
    let out = fit(&csv, &stumps, &gated);
    let why = text(&out.stderr);
    assert!(
        !out.status.success(),
        "a worse candidate passed the gate: {}",
        text(&out.stdout)
    );
    assert!(
        why.contains("gate: the candidate is worse than production"),
        "{why}"
    );
    assert!(why.contains("nothing published"), "{why}");
    assert_eq!((versions(), production()), (1, first.clone()));

    // A stronger recipe passes, is published and promoted; both columns are printed.
    let out = fit(&csv, &strong, &gated);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(
        said.contains(&format!("vs production ({first}) on the")),
        "{said}"
    );
    assert!(
        said.contains("gate: the candidate is no worse than production"),
        "{said}"
    );
    let second = production();
    assert_ne!(second, first);
    assert_eq!(versions(), 2);

    // Production now holds all the data: no row of a new candidate is fair to compare on,
    // so it is published but the alias stays.
    let out = fit(
        &csv,
        &strong,
        &["--seed", "9"]
            .iter()
            .chain(&gated)
            .copied()
            .collect::<Vec<_>>(),
    );
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains("not compared: its data ends"), "{said}");
    assert!(said.contains("production is not moved"), "{said}");
    assert_eq!((versions(), production()), (3, second));
}

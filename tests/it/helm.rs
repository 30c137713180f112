//! The Helm chart, checked without a cluster by `helm/check.py` (helm-python-sdk lint and
//! render, kubernetes-validate, assertions on the objects).

use std::collections::BTreeSet;
use std::process::{Command, Output};

use clap::CommandFactory;

use crate::support::text;

fn check(args: &[&str]) -> Output {
    let python = std::env::var("LOYALSCORE_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_string());
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} not found: run ./scripts/test.sh, which installs the chart checkers into .venv"
    );
    let after_drain = loyalscore::server::AFTER_DRAIN.as_secs().to_string();
    Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/helm/check.py"))
        .args(["--after-drain", &after_drain])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

#[test]
fn chart_lints_renders_and_validates_with_default_and_s3_values() {
    let out = check(&["--values", "helm/examples/values-s3.yaml"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok: ")).count(),
        2,
        "{stdout}"
    );
}

/// The CronJob promotes through `fit --promote` (the image has no shell), and only when asked.
#[test]
fn the_trainer_promotes_without_a_shell_when_asked() {
    let out = check(&[
        "--set",
        "trainer.enabled=true",
        "--set",
        "trainer.promote=true",
        "--set",
        "alerts.enabled=true",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// With TLS (and client certificates) on, the probes run `loyalscore health` over TLS and
/// present the pod's certificate; the scoring tokens and the TLS files are mounted whole.
#[test]
fn with_tls_on_the_probes_speak_tls() {
    for tls in [
        r#"server.tls={"secretName":"loyalscore-tls","clientCertificates":true}"#,
        r#"server.tls={"secretName":"loyalscore-tls","clientCertificates":false}"#,
    ] {
        let out = check(&[
            "--set",
            tls,
            "--set",
            r#"server.scoringTokens={"secretName":"scoring","key":"tokens"}"#,
        ]);
        assert!(out.status.success(), "{tls}: {}", text(&out.stderr));
    }
}

#[test]
fn a_broken_value_fails_the_check() {
    for (set, needle) in [
        ("replicaCount=\"three\"", "/replicaCount"),
        ("server.logFormat=\"xml\"", "/server/logFormat"),
        ("server.pollIntervalSecs=0", "/server/pollIntervalSecs"),
        ("server.unknownFlag=1", "unknownFlag"),
        ("server.exposureLog=\"s3://b/x\"", "exposureKey"),
        ("server.state=\"/var/lib/state.redb\"", "/server/state"),
        (
            r#"server.kafka={"brokers":"kafka:9092","group":"g","purchaseTopic":"p","segmentTopic":"s","rescoreSecs":0,"batch":10,"options":[]}"#,
            "needs server.state",
        ),
        (
            r#"server.kafka={"brokers":"kafka:9092","group":"g","purchaseTopic":"p","segmentTopic":"s","rescoreSecs":0,"batch":0,"options":[]}"#,
            "/server/kafka/batch",
        ),
    ] {
        let out = check(&["--set", set]);
        assert!(!out.status.success(), "{set} should fail the check");
        assert!(
            text(&out.stderr).contains(needle),
            "{set}: {}",
            text(&out.stderr)
        );
    }
}

/// Every server flag is settable from the chart, and the chart sets nothing the server lacks.
#[test]
fn chart_env_matches_the_server_flags() {
    let flags: BTreeSet<String> = loyalscore::cli::serve::Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    assert!(flags.len() >= 12, "{flags:?}");
    let out = check(&["--env-names"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let chart: BTreeSet<String> = serde_json::from_slice(&out.stdout).unwrap();
    let only_flags: Vec<_> = flags.difference(&chart).collect();
    let only_chart: Vec<_> = chart.difference(&flags).collect();
    assert!(
        only_flags.is_empty() && only_chart.is_empty(),
        "server flags the chart cannot set: {only_flags:?}; chart env the server lacks: {only_chart:?}"
    );
}

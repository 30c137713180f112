//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use loyalscore::time::parse_timestamp;
use loyalscore::trainer::generate::{generate, GenerateOptions, Truth};

/// A generated log written to `dir/sample.csv`, with its truth.
/// A free loopback port: bound, then released for the server the caller starts on it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process the test started (a server), killed and reaped on drop.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn sample(dir: &Path, customers: usize, days: u32, seed: u64) -> (PathBuf, Vec<Truth>) {
    let opts = GenerateOptions {
        customers,
        seed,
        start: parse_timestamp("2023-01-01").unwrap(),
        days,
    };
    let mut buf = Vec::new();
    let (truth, _) = generate(&opts, &mut buf, &|_| {}).unwrap();
    let path = dir.join("sample.csv");
    std::fs::write(&path, buf).unwrap();
    (path, truth)
}

/// Runs `loyalscore-train` with arguments; returns its output.
pub fn train_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loyalscore-train"))
        .args(args)
        .env("LOYALSCORE_LOG", "warn")
        .output()
        .unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// Every file below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

use std::sync::OnceLock;

use bytes::Bytes;
use loyalscore::model::{Manifest, BUNDLE_FILE};
use loyalscore::registry::Registry;
use loyalscore::trainer::{
    load_transactions, train, FitOptions, LoadOptions, Overrides, RunInfo, Silent,
};

/// Trains both forests on a CSV log with `n_trees` trees of at most `depth` levels.
pub fn train_on(csv: &[u8], n_trees: usize, depth: u16, seed: u64) -> (Manifest, Bytes) {
    let log = load_transactions(csv, "fixture.csv", &LoadOptions::default(), |_| {}).unwrap();
    let small = Overrides {
        max_depth: Some(Some(depth)),
        min_samples_leaf: Some(20),
    };
    let fit = FitOptions {
        n_trees,
        churn: small.clone(),
        clv: small,
        force: true,
        seed,
        ..FitOptions::default()
    };
    let run = RunInfo {
        args: vec!["test".into()],
        created_at: chrono::Utc::now(),
    };
    let t = train(&log, &fit, &run, &Silent).unwrap();
    (t.manifest, Bytes::from(t.bundle_bytes))
}

fn fixture_log(seed: u64) -> Vec<u8> {
    let opts = GenerateOptions {
        customers: 800,
        seed,
        start: parse_timestamp("2023-01-01").unwrap(),
        days: 700,
    };
    let mut buf = Vec::new();
    generate(&opts, &mut buf, &|_| {}).unwrap();
    buf
}

/// A small real model, trained once per test binary.
fn fixture() -> &'static (Manifest, Bytes) {
    static F: OnceLock<(Manifest, Bytes)> = OnceLock::new();
    F.get_or_init(|| train_on(&fixture_log(21), 4, 6, 7))
}

/// Another small model, on other customers: its scores differ from [`fixture`]'s.
fn other_fixture() -> &'static (Manifest, Bytes) {
    static F: OnceLock<(Manifest, Bytes)> = OnceLock::new();
    F.get_or_init(|| train_on(&fixture_log(22), 4, 6, 8))
}

/// [`other_fixture`] published as `id`.
pub async fn publish_other(reg: &Registry, id: &str) {
    publish_model(reg, id, other_fixture()).await;
}

/// A trained model published as `id`.
pub async fn publish_model(reg: &Registry, id: &str, model: &(Manifest, Bytes)) {
    let mut m = model.0.clone();
    m.version = id.to_string();
    reg.publish(&m, &[(BUNDLE_FILE, model.1.clone())])
        .await
        .unwrap();
}

/// The fixture model under another version id.
pub fn version(id: &str) -> (Manifest, Bytes) {
    let (m, b) = fixture();
    let mut m = m.clone();
    m.version = id.to_string();
    (m, b.clone())
}

pub async fn publish(reg: &Registry, id: &str) {
    let (m, b) = version(id);
    reg.publish(&m, &[(BUNDLE_FILE, b)]).await.unwrap();
}

/// Points `production` at a version, as a test actor.
pub async fn promote(reg: &Registry, version: &str, expect: loyalscore::registry::Expect) {
    let who = loyalscore::registry::Move {
        actor: "t".into(),
        reason: "test".into(),
    };
    reg.set_alias("production", version, &expect, &who)
        .await
        .unwrap();
}

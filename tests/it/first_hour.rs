//! A new user's first hour, with the real binaries: real exports read as written, and no
//! silent failure (a server that serves nothing says why, a missing registry is an error).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use loyalscore::registry::Registry;

use crate::support::{publish, sample, text, train_cli};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `loyalscore-serve` on `registry` and `alias` and returns the first warning it
/// logs (within 30 s), with the server killed.
fn first_warning(registry: &str, alias: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loyalscore-serve"))
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--registry",
            registry,
            "--alias",
            alias,
            "--metrics-listen",
            "off",
            "--state",
            "off",
            "--log",
            "warn",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    line.expect("the server logs a warning when it has nothing to serve")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_nothing_to_serve_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-registry");
    let line = first_warning(missing.to_str().unwrap(), "production");
    assert!(
        line.contains("nothing to serve")
            && line.contains("does not exist")
            && line.contains("alias=production"),
        "{line}"
    );
    // Logs that are not a terminal carry no colour codes.
    assert!(!line.contains('\u{1b}'), "{line:?}");
    assert!(!missing.exists(), "a read does not create the folder");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let line = first_warning(empty.to_str().unwrap(), "production");
    assert!(line.contains("holds no versions"), "{line}");

    let reg_dir = dir.path().join("models");
    let reg = Registry::open(reg_dir.to_str().unwrap()).unwrap();
    publish(&reg, "v001").await;
    crate::support::promote(&reg, "v001", loyalscore::registry::Expect::Absent).await;
    let line = first_warning(reg_dir.to_str().unwrap(), "prodution");
    assert!(
        line.contains("no such alias; the aliases that exist are production")
            && line.contains("alias=prodution"),
        "{line}"
    );
}

#[test]
fn a_registry_that_does_not_exist_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/path");
    let out = Command::new(env!("CARGO_BIN_EXE_loyalscore"))
        .args(["--registry", missing.to_str().unwrap(), "models", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );
    assert!(!missing.exists());
}

/// The sample as a German programme exports it: semicolons, decimal commas, local
/// `YYYY-MM-DD HH:MM:SS` times, a byte-order mark.
fn german(csv: &str) -> String {
    let mut out = String::from("\u{feff}customer_id;timestamp;amount\n");
    for line in csv.lines().skip(1) {
        let c: Vec<&str> = line.split(',').collect();
        let ts = c[1].trim_end_matches('Z').replace('T', " ");
        out.push_str(&format!("{};{ts};{}\n", c[0], c[2].replace('.', ",")));
    }
    out
}

#[test]
fn real_exports_are_read_and_fit_speaks_json() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = sample(dir.path(), 400, 700, 3);
    let de = dir.path().join("export.csv");
    std::fs::write(&de, german(&std::fs::read_to_string(&csv).unwrap())).unwrap();
    let reg = dir.path().join("models");
    let out = train_cli(&[
        "fit",
        "--transactions",
        de.to_str().unwrap(),
        "--registry",
        reg.to_str().unwrap(),
        "--timezone",
        "Europe/Berlin",
        "--trees",
        "10",
        "--force",
        "--json",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("semicolon delimiter (detected), decimal comma (detected), zone-less times in Europe/Berlin")
            && stderr.contains("rows rejected               0"),
        "{stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["published"], true);
    let version = v["version"].as_str().unwrap();
    assert!(v["metrics"]["churn"]["roc_auc"].as_f64().is_some(), "{v}");

    // `models show` lists the features, with the ranges scores are judged against.
    let out = Command::new(env!("CARGO_BIN_EXE_loyalscore"))
        .args([
            "--registry",
            reg.to_str().unwrap(),
            "models",
            "show",
            version,
        ])
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    assert!(
        shown.contains("recency_days") && shown.contains("recency_log_z") && shown.contains("MAX"),
        "{shown}"
    );

    // An empty file, and the limit message naming its flag.
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let out = train_cli(&[
        "fit",
        "--transactions",
        empty.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(
        text(&out.stderr).contains("the file is empty"),
        "{}",
        text(&out.stderr)
    );
    let out = train_cli(&[
        "fit",
        "--transactions",
        de.to_str().unwrap(),
        "--decimal-comma",
        "--delimiter",
        "comma",
        "--dry-run",
    ]);
    assert!(
        text(&out.stderr).contains("--delimiter semicolon"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn generate_does_not_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("sample.csv");
    let gen = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--customers",
            "20",
            "--days",
            "60",
            "--out",
            out_path.to_str().unwrap(),
        ];
        args.extend(extra);
        train_cli(&args)
    };
    assert!(gen(&[]).status.success());
    let before = std::fs::read(&out_path).unwrap();
    let again = gen(&["--seed", "9"]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        std::fs::read(&out_path).unwrap(),
        before,
        "nothing was touched"
    );
    assert!(gen(&["--seed", "9", "--force"]).status.success());
    assert_ne!(std::fs::read(&out_path).unwrap(), before);
}

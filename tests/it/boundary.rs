//! The one "history before as_of" rule at its edge: date-only purchases on the day after
//! `--as-of` lie exactly on the as-of instant. Online scoring through the server and offline
//! scoring must both leave them out, agree on every customer, and both succeed.

use std::collections::HashMap;
use std::process::Command;

use crate::server::{production_v001, until_serving, TestServer};
use crate::support::{sample, text};

/// `2024-03-05T14:22:10Z` → `2024-03-05`.
fn date_only(csv: &str) -> String {
    let mut out = String::with_capacity(csv.len());
    for (i, line) in csv.lines().enumerate() {
        if i == 0 {
            out.push_str(line);
        } else {
            let mut cols: Vec<&str> = line.split(',').collect();
            cols[1] = &cols[1][..10];
            out.push_str(&cols.join(","));
        }
        out.push('\n');
    }
    out
}

fn scores(path: &std::path::Path) -> HashMap<String, (String, String, String)> {
    csv::Reader::from_path(path)
        .unwrap()
        .records()
        .map(|r| {
            let c = r.unwrap();
            (
                c[0].to_string(),
                (c[1].to_string(), c[2].to_string(), c[3].to_string()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn online_and_offline_agree_at_the_as_of_day_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = sample(dir.path(), 600, 700, 5);
    let mut dated = date_only(&std::fs::read_to_string(&csv).unwrap());
    // A customer whose only purchase is on the boundary day has no history at all.
    dated.push_str("ONLY-ON-THE-DAY,2024-06-01,12.50,12,0,web,1\n");
    // An id with a comma must come back whole from both (quoted CSV).
    dated.push_str(
        "\"ACME, Inc.\",2024-01-10,40,40,0,web,1\n\"ACME, Inc.\",2024-03-02,35,35,0,web,1\n",
    );
    let boundary = dated.lines().filter(|l| l.contains(",2024-06-01,")).count();
    assert!(
        boundary > 5,
        "the log should hold purchases on the boundary day"
    );
    let dated_csv = dir.path().join("dated.csv");
    std::fs::write(&dated_csv, dated).unwrap();

    let reg = dir.path().join("registry");
    production_v001(reg.to_str().unwrap()).await;
    let server = TestServer::start(reg.to_str().unwrap(), |_| {}).await;
    until_serving(&server).await;

    let (online, offline) = (
        dir.path().join("online.csv"),
        dir.path().join("offline.csv"),
    );
    let addr = format!("http://{}", server.addr);
    let run = |bin: &str, args: &[&str]| {
        let out = Command::new(bin)
            .args(args)
            .args([
                "--transactions",
                dated_csv.to_str().unwrap(),
                "--as-of",
                "2024-05-31",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{bin} {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let online_msg = tokio::task::block_in_place(|| {
        run(
            env!("CARGO_BIN_EXE_loyalscore"),
            &[
                "score-log",
                "--server",
                &addr,
                "--out",
                online.to_str().unwrap(),
            ],
        )
    });
    let offline_msg = run(
        env!("CARGO_BIN_EXE_loyalscore-train"),
        &[
            "score",
            "--registry",
            reg.to_str().unwrap(),
            "--out",
            offline.to_str().unwrap(),
        ],
    );
    server.stop().await;

    let (on, off) = (scores(&online), scores(&offline));
    assert!(on.len() > 300, "{online_msg}");
    assert!(online_msg.contains("(0 failed)"), "{online_msg}");
    assert!(
        offline_msg.contains("1 without a purchase before --as-of skipped"),
        "{offline_msg}"
    );
    assert!(!on.contains_key("ONLY-ON-THE-DAY") && !off.contains_key("ONLY-ON-THE-DAY"));
    assert!(on.contains_key("ACME, Inc.") && off.contains_key("ACME, Inc."));
    assert_eq!(on.len(), off.len());
    for (id, s) in &off {
        assert_eq!(on.get(id), Some(s), "customer {id}");
    }
}

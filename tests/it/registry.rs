//! One contract suite for the registry, run on every backend: in memory, the local
//! filesystem, and a real S3 API (moto on loopback).

use std::sync::Arc;

use object_store::{memory::InMemory, path::Path, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::Barrier;

use loyalscore::model::{BUNDLE_FILE, MANIFEST_FILE};
use loyalscore::registry::{Expect, Experiment, Move, Registry, RegistryError};
use loyalscore::routing::Arm;

use crate::moto::Moto;
use crate::support::{publish, version};

fn who(actor: &str, reason: &str) -> Move {
    Move {
        actor: actor.into(),
        reason: reason.into(),
    }
}

async fn put(store: &Arc<dyn ObjectStore>, root: &Path, key: &str, bytes: &'static [u8]) {
    let mut p = root.clone();
    for part in key.split('/') {
        p = p.join(part);
    }
    store.put(&p, PutPayload::from_static(bytes)).await.unwrap();
}

fn experiment(salt: &str, challenger: &str, weights: [u32; 2]) -> Experiment {
    Experiment {
        name: "exp".into(),
        salt: salt.into(),
        arms: vec![
            Arm {
                name: "control".into(),
                version: "v001".into(),
                weight: weights[0],
            },
            Arm {
                name: "challenger".into(),
                version: challenger.into(),
                weight: weights[1],
            },
        ],
        shadow: vec![],
        holdout: 0.0,
    }
}

/// Traffic documents: a race on one record has exactly one winner, bad documents write
/// nothing, and stop and history behave.
async fn traffic_contract(reg: &Registry) {
    assert_eq!(reg.traffic("production").await.unwrap(), None);
    let barrier = Arc::new(Barrier::new(6));
    let racers: Vec<_> = (0..6)
        .map(|k| {
            let (reg, barrier) = (reg.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                reg.set_traffic(
                    "production",
                    experiment(&format!("salt-{k}"), "v002", [90, 10]),
                    Some(0),
                    &who(&format!("racer{k}"), "race"),
                )
                .await
            })
        })
        .collect();
    let mut wins = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(rec) => {
                wins += 1;
                assert_eq!(rec.seq, 1);
            }
            Err(RegistryError::TrafficMoved { actual: 1, .. }) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(wins, 1);
    for (bad, needle) in [
        (experiment("s", "v002", [0, 0]), "every weight is 0"),
        (experiment("s", "v404", [1, 1]), "v404"),
    ] {
        let err = reg
            .set_traffic("production", bad, None, &who("eve", "bad"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    assert_eq!(reg.traffic_history("production").await.unwrap().len(), 1);
    let stop = reg
        .stop_traffic("production", Some(1), &who("ann", "done"))
        .await
        .unwrap();
    assert_eq!((stop.seq, stop.experiment.is_none()), (2, true));
    assert!(matches!(
        reg.stop_traffic("production", None, &who("ann", "again"))
            .await,
        Err(RegistryError::NoExperiment(_))
    ));
    let h = reg.traffic_history("production").await.unwrap();
    assert_eq!(
        h.iter()
            .map(|r| (r.seq, r.action.as_str()))
            .collect::<Vec<_>>(),
        [(1, "set"), (2, "stop")]
    );
    // The registry, not each front end, gives an experiment without a salt its name as salt,
    // and refuses a change without a reason.
    let rec = reg
        .set_traffic(
            "production",
            experiment("", "v002", [1, 1]),
            Some(2),
            &who("ann", "no salt"),
        )
        .await
        .unwrap();
    assert_eq!(rec.experiment.unwrap().salt, "exp");
    let err = reg
        .stop_traffic("production", Some(3), &who("ann", " "))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::ReasonRequired), "{err}");
}

async fn contract(reg: Registry, store: Arc<dyn ObjectStore>, root: Path) {
    // Empty registry.
    assert!(reg.list_versions().await.unwrap().versions.is_empty());
    assert!(reg.alias("production").await.unwrap().is_none());
    assert!(matches!(
        reg.set_alias("production", "v404", &Expect::Any, &who("ann", "x")).await,
        Err(RegistryError::VersionNotFound(v)) if v == "v404"
    ));
    assert!(
        reg.alias_history("production").await.unwrap().is_empty(),
        "a failed move writes nothing"
    );

    // Versions are immutable and listed newest first.
    for v in ["v001", "v002", "v003"] {
        publish(&reg, v).await;
    }
    let (m, b) = version("v002");
    assert!(matches!(
        reg.publish(&m, &[(BUNDLE_FILE, b)]).await,
        Err(RegistryError::VersionExists(v)) if v == "v002"
    ));
    let ids: Vec<String> = reg
        .list_versions()
        .await
        .unwrap()
        .versions
        .into_iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(ids, ["v003", "v002", "v001"]);
    let (m, bundle) = reg.load("v002").await.unwrap();
    assert_eq!(m.version, "v002");
    assert!(bundle.churn.n_trees() > 0);

    // Compare-and-swap moves and rollback, each in the history.
    let r1 = reg
        .set_alias("production", "v001", &Expect::Absent, &who("ann", "first"))
        .await
        .unwrap();
    assert_eq!((r1.seq, r1.previous.as_deref()), (1, None));
    assert!(matches!(
        reg.set_alias("production", "v002", &Expect::Absent, &who("bob", "x")).await,
        Err(RegistryError::ExpectMismatch { actual, .. }) if actual == "v001"
    ));
    assert!(matches!(
        reg.set_alias(
            "production",
            "v002",
            &Expect::Version("v003".into()),
            &who("bob", "x")
        )
        .await,
        Err(RegistryError::ExpectMismatch { .. })
    ));
    let r2 = reg
        .set_alias(
            "production",
            "v002",
            &Expect::Version("v001".into()),
            &who("bob", "better"),
        )
        .await
        .unwrap();
    assert_eq!(
        (r2.seq, r2.previous.as_deref(), r2.actor.as_str()),
        (2, Some("v001"), "bob")
    );
    let r3 = reg
        .rollback_alias("production", &who("cy", "bad numbers"))
        .await
        .unwrap();
    assert_eq!(
        (
            r3.seq,
            r3.version.as_str(),
            r3.previous.as_deref(),
            r3.action.as_str()
        ),
        (3, "v001", Some("v002"), "rollback")
    );
    let h = reg.alias_history("production").await.unwrap();
    let moves: Vec<(u64, String, Option<String>, String, String)> = h
        .iter()
        .map(|r| {
            (
                r.seq,
                r.version.clone(),
                r.previous.clone(),
                r.actor.clone(),
                r.reason.clone(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        vec![
            (1, "v001".into(), None, "ann".into(), "first".into()),
            (
                2,
                "v002".into(),
                Some("v001".into()),
                "bob".into(),
                "better".into()
            ),
            (
                3,
                "v001".into(),
                Some("v002".into()),
                "cy".into(),
                "bad numbers".into()
            ),
        ]
    );
    assert!(matches!(
        reg.set_alias("production", "v001", &Expect::Any, &who("dee", "again"))
            .await,
        Err(RegistryError::Unchanged { .. })
    ));
    // Rollback steps back through the deployments: v001 -> v002 -> v003, then back to
    // v002, then v001 (not back to v003), then nothing is left to roll back to.
    assert!(matches!(
        reg.rollback_alias("production", &who("cy", "")).await,
        Err(RegistryError::NothingToRollBack(_))
    ));
    for v in ["v002", "v003"] {
        reg.set_alias("production", v, &Expect::Any, &who("dee", "forward"))
            .await
            .unwrap();
    }
    for back in ["v002", "v001"] {
        let r = reg
            .rollback_alias("production", &who("cy", ""))
            .await
            .unwrap();
        assert_eq!((r.version.as_str(), r.reason.as_str()), (back, "rollback"));
    }
    assert!(matches!(
        reg.rollback_alias("production", &who("cy", "")).await,
        Err(RegistryError::NothingToRollBack(_))
    ));
    assert!(matches!(
        reg.rollback_alias("staging", &who("a", "b")).await,
        Err(RegistryError::AliasNotFound(_))
    ));
    assert!(matches!(
        reg.set_alias("../etc", "v001", &Expect::Any, &who("a", "b"))
            .await,
        Err(RegistryError::BadAliasName(_))
    ));
    assert!(matches!(
        reg.load("a/b").await,
        Err(RegistryError::BadVersionId(_))
    ));

    // The race: 8 promoters on one alias, three rounds; exactly one wins each round.
    let targets = ["v001", "v002", "v003"];
    for round in 0..3 {
        let current = reg.alias("production").await.unwrap().unwrap();
        let barrier = Arc::new(Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (reg, barrier, expect) = (
                    reg.clone(),
                    barrier.clone(),
                    Expect::Version(current.version.clone()),
                );
                let target = targets[(round + i) % 3];
                tokio::spawn(async move {
                    barrier.wait().await;
                    reg.set_alias(
                        "production",
                        target,
                        &expect,
                        &who(&format!("p{round}-{i}"), "race"),
                    )
                    .await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(r) => winners.push(r),
                Err(RegistryError::LostRace { winner, .. }) => {
                    assert!(targets.contains(&winner.as_str()))
                }
                Err(RegistryError::ExpectMismatch { .. } | RegistryError::Unchanged { .. }) => {}
                Err(e) => panic!("unexpected error in the race: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one promoter wins");
        assert_eq!(winners[0].seq, current.seq + 1);
        assert_eq!(
            winners[0].previous.as_deref(),
            Some(current.version.as_str())
        );
        let now = reg.alias("production").await.unwrap().unwrap();
        assert_eq!(now, winners[0], "the alias is the winner's move");
    }
    let h = reg.alias_history("production").await.unwrap();
    assert_eq!(
        h.iter().map(|r| r.seq).collect::<Vec<_>>(),
        // 3 moves, 2 sets and 2 rollbacks, 3 race rounds.
        (1..=10).collect::<Vec<u64>>(),
        "no gap"
    );
    for w in h.windows(2) {
        assert_eq!(
            w[1].previous.as_deref(),
            Some(w[0].version.as_str()),
            "no lost entry"
        );
    }

    // Corruption: every kind is a clear error, nothing is written, aliases stay put.
    let before = reg.alias("production").await.unwrap().unwrap();
    put(
        &store,
        &root,
        &format!("versions/vjson/{MANIFEST_FILE}"),
        b"{not json",
    )
    .await;
    assert!(matches!(
        reg.manifest("vjson").await,
        Err(RegistryError::Corrupt { .. })
    ));
    let (mut m, _) = version("vsum");
    m.files[0].sha256 = "0".repeat(64);
    put(
        &store,
        &root,
        &format!("versions/vsum/{MANIFEST_FILE}"),
        Box::leak(m.to_json().unwrap().into_boxed_slice()),
    )
    .await;
    let (_, b) = version("vsum");
    put(
        &store,
        &root,
        &format!("versions/vsum/{BUNDLE_FILE}"),
        Box::leak(b.to_vec().into_boxed_slice()),
    )
    .await;
    let (m, _) = version("vmissing");
    put(
        &store,
        &root,
        &format!("versions/vmissing/{MANIFEST_FILE}"),
        Box::leak(m.to_json().unwrap().into_boxed_slice()),
    )
    .await;
    for (bad, needle) in [
        ("vjson", "cannot decode"),
        ("vsum", "checksum mismatch"),
        ("vmissing", "missing"),
    ] {
        let err = reg
            .set_alias("production", bad, &Expect::Any, &who("eve", "oops"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(needle), "{bad}: {err}");
        assert_eq!(
            reg.alias("production").await.unwrap().unwrap(),
            before,
            "{bad} moved the alias"
        );
    }
    let listing = reg.list_versions().await.unwrap();
    assert_eq!(
        listing.versions.len(),
        5,
        "v001-v003 and the two with readable manifests"
    );
    assert_eq!(
        listing
            .broken
            .iter()
            .map(|b| b.0.as_str())
            .collect::<Vec<_>>(),
        ["vjson"]
    );
    put(
        &store,
        &root,
        "aliases/staging/000000000001.json",
        b"garbage",
    )
    .await;
    // A corrupt record is skipped and reported, never served; moves wait for a repair.
    let state = reg.alias_state("staging").await.unwrap();
    assert_eq!(state.current, None);
    assert_eq!(state.corrupt.iter().map(|c| c.seq).collect::<Vec<_>>(), [1]);
    assert_eq!(reg.alias("staging").await.unwrap(), None);
    assert!(matches!(
        reg.set_alias("staging", "v001", &Expect::Any, &who("eve", "x"))
            .await,
        Err(RegistryError::NeedsRepair { seq: 1, .. })
    ));
    assert!(matches!(
        reg.repair_alias("staging", None, &who("eve", "")).await,
        Err(RegistryError::NoGoodRecord(_))
    ));
    let repaired = reg
        .repair_alias("staging", Some("v001"), &who("eve", ""))
        .await
        .unwrap();
    assert_eq!((repaired.seq, repaired.action.as_str()), (2, "repair"));
    assert_eq!(repaired.reason, "repair: record 1 was corrupt");
    assert_eq!(reg.alias("staging").await.unwrap().unwrap().version, "v001");
    let journal = reg.alias_journal("staging").await.unwrap();
    assert_eq!(
        (journal.records.len(), journal.corrupt.len()),
        (1, 1),
        "history rewritten"
    );
    assert!(matches!(
        reg.repair_alias("staging", None, &who("eve", "")).await,
        Err(RegistryError::NothingToRepair(_))
    ));
    assert_eq!(reg.alias("production").await.unwrap().unwrap(), before);
    traffic_contract(&reg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contract_in_memory() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let root = Path::from("reg");
    contract(
        Registry::new(store.clone(), root.clone(), "memory://reg"),
        store,
        root,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contract_local_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path().to_str().unwrap()).unwrap();
    let store = reg.store().clone();
    contract(reg, store, Path::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contract_s3() {
    let moto = Moto::start();
    let store = moto.store();
    let reg = Registry::new(store.clone(), Moto::prefix(), "s3://test");
    contract(reg, store, Moto::prefix()).await;
}

#[tokio::test]
async fn unreachable_store_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store: Arc<dyn ObjectStore> = Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name("nowhere")
            .with_access_key_id("k")
            .with_secret_access_key("s")
            .with_retry(object_store::RetryConfig {
                max_retries: 0,
                ..Default::default()
            })
            .build()
            .unwrap(),
    );
    let reg = Registry::new(store, Path::default(), "s3://nowhere");
    let err = reg.list_versions().await.unwrap_err();
    assert!(matches!(err, RegistryError::Store(_)), "{err}");
    let err = reg
        .set_alias("production", "v001", &Expect::Any, &who("a", "b"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("object store"), "{err}");
}

//! Faults of the real parts around the server: here, the registry's object store going away.

use std::process::{Command, Stdio};
use std::time::Duration;

use loyalscore::model::BUNDLE_FILE;
use loyalscore::proto::v1::scoring_client::ScoringClient;
use loyalscore::registry::{Expect, Move, Registry};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::moto::{Moto, BUCKET};
use crate::server::{features_request, typical, wait_for};
use crate::support::{free_port, version, Killed};

/// A pinned version that cannot be read because the store is down is `UNAVAILABLE` (worth a
/// retry), not `NOT_FOUND`; the version in memory keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_while_loading_a_version_is_unavailable() {
    let moto = Moto::start();
    let reg = Registry::new(moto.store(), Moto::prefix(), "moto");
    for id in ["v001", "v002"] {
        let (m, b) = version(id);
        reg.publish(&m, &[(BUNDLE_FILE, b)]).await.unwrap();
    }
    let who = Move {
        actor: "t".into(),
        reason: "test".into(),
    };
    reg.set_alias("production", "v001", &Expect::Absent, &who)
        .await
        .unwrap();

    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_loyalscore-serve"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--registry",
            &format!("s3://{BUCKET}/{}", Moto::prefix()),
            "--metrics-listen",
            "off",
            "--log",
            "error",
        ])
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Killed(child);
    let addr = format!("http://127.0.0.1:{port}");
    wait_for(async || {
        let Ok(ch) = tonic::transport::Channel::from_shared(addr.clone())
            .unwrap()
            .connect()
            .await
        else {
            return false;
        };
        let mut h = HealthClient::new(ch);
        h.check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
    })
    .await;
    let mut client = ScoringClient::connect(addr.clone()).await.unwrap();
    let pinned = |v: &str| {
        let mut r = features_request("C1", typical());
        r.version = v.into();
        r
    };
    let e = client.score(pinned("v404")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    drop(moto);
    let e = client.score(pinned("v002")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("v002"), "{e:?}");
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        client.score(features_request("C1", typical())),
    )
    .await
    .unwrap()
    .unwrap()
    .into_inner();
    assert_eq!(
        r.model_version, "v001",
        "the version in memory keeps serving"
    );
}

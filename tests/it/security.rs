//! Self-healing and callers' credentials on the real server: registry faults that clear by
//! themselves, corrupt alias records skipped and repaired, tokens, reflection, and feature
//! values no customer can have.

use std::time::Duration;

use loyalscore::model::BUNDLE_FILE;
use loyalscore::proto::v1 as pb;
use loyalscore::registry::{Expect, Registry};
use loyalscore::server::{serve, Config, CURRENT_SERVICE};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::cli::cli;
use crate::hostile::metric;
use crate::server::{features_request, typical, wait_for, TestServer};
use crate::support::{promote, publish, text};

async fn served_version(server: &TestServer) -> String {
    let r = server
        .scoring()
        .await
        .score(features_request("c1", typical()))
        .await
        .unwrap();
    r.into_inner().model_version
}

/// An alias record as another writer (a CI job, an operator) would have left it.
fn alias_record(dir: &std::path::Path, seq: u64, version: &str, previous: &str) {
    let body = serde_json::json!({
        "alias": "production", "seq": seq, "version": version, "previous": previous,
        "action": "set", "actor": "ci", "at": "2026-12-01T00:00:00.000Z", "reason": "nightly",
    });
    let path = dir.join(format!("aliases/production/{seq:012}.json"));
    std::fs::write(path, serde_json::to_vec(&body).unwrap()).unwrap();
}

/// The alias moves to a version whose bundle the store cannot give (here: gone from the
/// folder, as after a permission error or a half-finished sync). The server keeps the old
/// version, says so (gauge, `current` health NOT_SERVING, readiness still SERVING), tries
/// again with backoff, and serves the new version by itself once the store has it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_heals_by_itself_once_the_store_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let reg = Registry::open(path).unwrap();
    publish(&reg, "v001").await;
    publish(&reg, "v002").await;
    promote(&reg, "v001", Expect::Absent).await;
    let server = TestServer::start(path, |_| {}).await;
    wait_for(async || server.health(CURRENT_SERVICE).await == ServingStatus::Serving).await;
    assert_eq!(served_version(&server).await, "v001");
    assert_eq!(
        metric(&server.metrics().await, "loyalscore_model_stale", &[]),
        0.0
    );

    let bundle = dir.path().join(format!("versions/v002/{BUNDLE_FILE}"));
    let away = dir.path().join("bundle.away");
    std::fs::rename(&bundle, &away).unwrap();
    alias_record(dir.path(), 2, "v002", "v001");
    wait_for(async || metric(&server.metrics().await, "loyalscore_model_stale", &[]) == 1.0).await;
    assert_eq!(
        server.health(CURRENT_SERVICE).await,
        ServingStatus::NotServing
    );
    assert_eq!(server.health("").await, ServingStatus::Serving, "readiness");
    assert_eq!(
        served_version(&server).await,
        "v001",
        "the old version keeps serving"
    );

    std::fs::rename(&away, &bundle).unwrap();
    wait_for(async || server.health(CURRENT_SERVICE).await == ServingStatus::Serving).await;
    assert_eq!(served_version(&server).await, "v002");
    let m = server.metrics().await;
    assert_eq!(metric(&m, "loyalscore_model_stale", &[]), 0.0);
    assert!(metric(&m, "loyalscore_model_loads_total", &["failed"]) >= 1.0);
    server.stop().await;
}

/// A corrupt record on top of the alias (a half-written file) is skipped for the last good
/// one by servers (reported by a gauge) and the CLI (reported on stderr); moving the alias
/// is refused until `alias repair` supersedes it, and the history keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_alias_record_is_skipped_reported_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let reg = Registry::open(path).unwrap();
    for v in ["v001", "v002"] {
        publish(&reg, v).await;
    }
    promote(&reg, "v001", Expect::Absent).await;
    promote(&reg, "v002", Expect::Version("v001".into())).await;
    std::fs::write(
        dir.path().join("aliases/production/000000000003.json"),
        b"{\"alias\":",
    )
    .unwrap();

    // A replica started now serves the last good record's version.
    let server = TestServer::start(path, |_| {}).await;
    wait_for(async || server.health("").await == ServingStatus::Serving).await;
    assert_eq!(served_version(&server).await, "v002");
    let gauge = async || {
        metric(
            &server.metrics().await,
            "loyalscore_alias_corrupt_records",
            &[],
        )
    };
    assert_eq!(gauge().await, 1.0);

    let list = cli(path, &["alias", "list"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert!(text(&list.stdout).contains("v002"));
    assert!(
        text(&list.stderr).contains("record 3 is corrupt and skipped"),
        "{}",
        text(&list.stderr)
    );
    let set = cli(
        path,
        &["alias", "set", "production", "v001", "--reason", "x"],
    );
    assert!(!set.status.success());
    assert!(
        text(&set.stderr).contains("alias repair production"),
        "{}",
        text(&set.stderr)
    );
    let none = cli(path, &["alias", "repair", "staging"]);
    assert!(!none.status.success());

    let fix = cli(path, &["--json", "alias", "repair", "production"]);
    assert!(fix.status.success(), "{}", text(&fix.stderr));
    let rec: serde_json::Value = serde_json::from_slice(&fix.stdout).unwrap();
    assert_eq!(
        (rec["seq"].as_u64(), rec["version"].as_str()),
        (Some(4), Some("v002"))
    );
    assert_eq!(rec["action"], "repair");
    assert_eq!(rec["reason"], "repair: record 3 was corrupt");
    let history = cli(path, &["alias", "history", "production"]);
    assert!(history.status.success());
    assert!(
        text(&history.stderr).contains("record 3 is corrupt"),
        "history hides it"
    );
    assert!(
        text(&history.stdout).contains("repair"),
        "{}",
        text(&history.stdout)
    );
    wait_for(async || gauge().await == 0.0).await;
    // Moves work again, and a rollback steps back past the repair to v001.
    let back = cli(path, &["alias", "rollback", "production"]);
    assert!(back.status.success(), "{}", text(&back.stderr));
    assert!(
        text(&back.stdout).contains("v002 -> v001"),
        "{}",
        text(&back.stdout)
    );
    server.stop().await;
}

fn config_for(registry: &str, tweak: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::defaults().unwrap();
    c.registry = loyalscore::flags::RegistryArgs::new(registry);
    c.state = loyalscore::flags::StateArgs::off();
    tweak(&mut c);
    c
}

/// A short admin or scoring token stops the server before it listens, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_shorter_than_32_bytes_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("# rotated monthly\n{}\nshort\n", "k".repeat(32)),
    )
    .unwrap();
    for (config, needle) in [
        (
            config_for(path, |c| c.admin_token = Some("x".repeat(31))),
            "--admin-token (LOYALSCORE_ADMIN_TOKEN) is 31 bytes; at least 32",
        ),
        (
            config_for(path, |c| {
                c.scoring_tokens_file = Some(tokens.to_str().unwrap().into())
            }),
            "token 2 is 5 bytes",
        ),
    ] {
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let e = serve(config, grpc, None, std::future::pending())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{e}");
    }
}

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// With a tokens file, Score needs one of its tokens (health does not); refusals are
/// counted; a rotated file takes effect without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoring_callers_need_a_token_from_the_file_which_rotates_live() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let reg = Registry::open(path).unwrap();
    publish(&reg, "v001").await;
    promote(&reg, "v001", Expect::Absent).await;
    let (old, new) = ("o".repeat(32), "n".repeat(40));
    let file = dir.path().join("scoring-tokens");
    std::fs::write(&file, format!("{old}\n")).unwrap();
    let f = file.to_str().unwrap().to_string();
    let server = TestServer::start(path, |c| c.scoring_tokens_file = Some(f)).await;
    wait_for(async || server.health("").await == ServingStatus::Serving).await;
    let mut client = server.scoring().await;

    let none = client
        .score(features_request("c1", typical()))
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated);
    let wrong = client
        .score(with_token(features_request("c1", typical()), &new))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert!(!wrong.message().contains(&new), "the token is echoed");
    client
        .score(with_token(features_request("c1", typical()), &old))
        .await
        .unwrap();
    let m = server.metrics().await;
    assert_eq!(
        metric(&m, "loyalscore_auth_failures_total", &["scoring"]),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "loyalscore_requests_total",
            &["Score", "UNAUTHENTICATED"]
        ),
        2.0,
        "refusals are counted as requests too"
    );

    // Rotation: the new token in, the old one out, no restart. The mtime must change.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&file, format!("{new}\n")).unwrap();
    wait_for(async || {
        client
            .score(with_token(features_request("c1", typical()), &new))
            .await
            .is_ok()
    })
    .await;
    let gone = client
        .score(with_token(features_request("c1", typical()), &old))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::Unauthenticated);
    server.stop().await;
}

/// The services reflection lists.
async fn reflected_services(server: &TestServer) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut c = ServerReflectionClient::new(server.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = c
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(answer)) = futures::StreamExt::next(&mut answers).await else {
        panic!("no reflection answer");
    };
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            let mut names: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_admin_service_only_when_it_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let with = TestServer::start(path, |_| {}).await;
    let without = TestServer::start(path, |c| c.admin_token = None).await;
    let on = reflected_services(&with).await;
    let off = reflected_services(&without).await;
    assert!(on.contains(&"loyalscore.v1.Registry".to_string()), "{on:?}");
    assert!(!off.iter().any(|s| s.contains("Registry")), "{off:?}");
    assert!(
        off.contains(&"loyalscore.v1.Scoring".to_string()),
        "{off:?}"
    );
    with.stop().await;
    without.stop().await;
}

/// Values no customer can have are refused with the feature named, not scored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_values_no_customer_can_have_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let reg = Registry::open(path).unwrap();
    publish(&reg, "v001").await;
    promote(&reg, "v001", Expect::Absent).await;
    let server = TestServer::start(path, |_| {}).await;
    wait_for(async || server.health("").await == ServingStatus::Serving).await;
    let mut client = server.scoring().await;
    let names = loyalscore::features::FEATURE_NAMES;
    let at = |n: &str| names.iter().position(|f| *f == n).unwrap();
    for (name, value) in [
        ("spend_total", 1e308),
        ("recency_days", -3.0),
        ("purchases_total", -1.0),
        ("overdue_z", 1e6),
    ] {
        let mut v = typical();
        v[at(name)] = value;
        let e = client.score(features_request("c1", v)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name}");
        let want = format!("features.values[{}]: {name} is", at(name));
        assert!(e.message().contains(&want), "{}", e.message());
    }
    let ok: pb::ScoreResponse = client
        .score(features_request("c1", typical()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.model_version, "v001");
    server.stop().await;
}

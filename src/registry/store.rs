//! Choosing an object store from a URL or a path.

use std::sync::Arc;

use std::time::Duration;

use object_store::{
    aws::AmazonS3Builder, azure::MicrosoftAzureBuilder, gcp::GoogleCloudStorageBuilder,
    local::LocalFileSystem, memory::InMemory, path::Path, BackoffConfig, ObjectStore, RetryConfig,
};
use url::Url;

use super::RegistryError;

/// Opens the store a registry URL names, and the prefix inside it:
/// - a plain path or `file:///abs/path`: a local folder (created if missing);
/// - `s3://bucket/prefix`: Amazon S3 or an S3-compatible server, configured by the usual
///   `AWS_*` variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
///   `AWS_ENDPOINT` for another server, `AWS_ALLOW_HTTP=true` for plain HTTP);
/// - `gs://bucket/prefix` (`GOOGLE_*` variables), `az://container/prefix` (`AZURE_*`);
/// - `memory://`: an empty in-memory store, for tests.
pub fn open_store(url: &str) -> Result<(Arc<dyn ObjectStore>, Path), RegistryError> {
    let bad = |reason: String| RegistryError::BadUrl {
        url: url.to_string(),
        reason,
    };
    let Some((scheme, _)) = url.split_once("://") else {
        return local(std::path::Path::new(url)).map_err(bad);
    };
    let parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let prefix =
        Path::parse(parsed.path().trim_start_matches('/')).map_err(|e| bad(e.to_string()))?;
    let store: Arc<dyn ObjectStore> = match scheme {
        "file" => {
            let p = parsed
                .to_file_path()
                .map_err(|_| bad("not an absolute file path".into()))?;
            return local(&p).map_err(bad);
        }
        "memory" => Arc::new(InMemory::new()),
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env()
                .with_url(url)
                .with_retry(retry());
            // S3-compatible servers (MinIO, moto) are usually addressed by path and often
            // over plain HTTP; accept the switches under the names people already use.
            if let Ok(e) = std::env::var("AWS_ENDPOINT_URL") {
                b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
            }
            if env_flag("AWS_ALLOW_HTTP") {
                b = b.with_allow_http(true);
            }
            Arc::new(b.build().map_err(|e| bad(e.to_string()))?)
        }
        "gs" => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .with_retry(retry())
                .build()
                .map_err(|e| bad(e.to_string()))?,
        ),
        "az" | "azure" | "abfs" | "abfss" => Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .with_retry(retry())
                .build()
                .map_err(|e| bad(e.to_string()))?,
        ),
        other => return Err(bad(format!("unknown scheme {other:?}"))),
    };
    Ok((store, prefix))
}

/// A few quick retries: an unreachable store should fail a command in seconds, not the
/// default three minutes.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: Duration::from_secs(20),
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes"))
}

/// A folder. One that does not exist yet is not created here: a read of a misspelt path must
/// find nothing rather than leave an empty folder behind, and the first write creates it.
fn local(path: &std::path::Path) -> Result<(Arc<dyn ObjectStore>, Path), String> {
    if path.is_dir() {
        let store = LocalFileSystem::new_with_prefix(path).map_err(|e| e.to_string())?;
        return Ok((Arc::new(store), Path::default()));
    }
    let abs = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let root = Path::from_absolute_path(&abs).map_err(|e| e.to_string())?;
    Ok((Arc::new(LocalFileSystem::new()), root))
}

/// The folder a URL or path names, when it names a local one.
pub fn local_dir(url: &str) -> Option<std::path::PathBuf> {
    match url.split_once("://") {
        None => Some(std::path::PathBuf::from(url)),
        Some(("file", _)) => Url::parse(url).ok()?.to_file_path().ok(),
        Some(_) => None,
    }
}

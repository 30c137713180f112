//! Files the server follows while it runs (the scoring tokens, the TLS certificate and key):
//! checked every [`FILE_CHECK`] for a change of modification time, as a mounted Kubernetes
//! secret or a cert-manager renewal changes them. One rule for all of them: a change that
//! does not load (a renewal half written, a file gone) keeps what is in force, is logged once,
//! and is tried again at every check until it loads, so a fix that leaves the time alone (a
//! `chmod`) still takes effect.

use std::time::{Duration, SystemTime};

/// How often followed files are checked for a change.
pub const FILE_CHECK: Duration = Duration::from_secs(5);

/// The modification times of `paths`, `None` for a file that cannot be read.
fn stamps(paths: &[String]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// Calls `reload` every `every` while `paths` differ from what was last loaded, until it
/// succeeds. `what` names the files in the log; the error `reload` returns must not hold a
/// secret (it is logged).
pub async fn follow<E: std::fmt::Display>(
    what: &'static str,
    paths: Vec<String>,
    every: Duration,
    mut reload: impl FnMut() -> Result<(), E>,
) {
    let mut loaded = stamps(&paths);
    let mut logged = None;
    loop {
        tokio::time::sleep(every).await;
        let now = stamps(&paths);
        if now == loaded {
            continue;
        }
        match reload() {
            Ok(()) => {
                tracing::info!(files = what, "reloaded");
                loaded = now;
                logged = None;
            }
            Err(e) => {
                if logged.as_ref() != Some(&now) {
                    tracing::error!(files = what, error = %e, "changed but do not load; what was in force stays");
                    logged = Some(now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Writes `text` and sets the file's modification time to `at`.
    fn write_at(path: &std::path::Path, text: &str, at: SystemTime) {
        std::fs::write(path, text).unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(at).unwrap();
    }

    /// A file that fails to load is tried again until it loads, though its time stays.
    #[tokio::test]
    async fn a_failed_reload_is_tried_again_until_it_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "one").unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        let p = path.clone();
        let follower = tokio::spawn(follow(
            "test",
            vec![path.to_string_lossy().into_owned()],
            Duration::from_millis(20),
            move || {
                let text = std::fs::read_to_string(&p).map_err(|e| e.to_string())?;
                seen.lock().unwrap().push(text.clone());
                if text == "good" {
                    Ok(())
                } else {
                    Err("not good".to_string())
                }
            },
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(calls.lock().unwrap().is_empty(), "no change, no reload");
        // A later time than the first write, whatever the file system's resolution.
        let later = SystemTime::now() + Duration::from_secs(10);
        write_at(&path, "bad", later);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let failed = calls.lock().unwrap().len();
        assert!(failed >= 2, "a failed reload is retried: {failed} attempts");
        // Fixed without a new time: still picked up, then no more reloads.
        write_at(&path, "good", later);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after_good = calls.lock().unwrap().len();
        assert_eq!(
            calls.lock().unwrap().last().map(String::as_str),
            Some("good")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            calls.lock().unwrap().len(),
            after_good,
            "loaded once, then left alone"
        );
        follower.abort();
    }
}

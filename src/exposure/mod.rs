//! The exposure log: one JSON line per scored experiment assignment, so outcomes can be
//! joined later (`loyalscore-train experiment-report`).
//!
//! Customer ids never leave the process raw: each record carries a keyed hash
//! (HMAC-SHA-256 with a secret the operator holds), which the read-out recomputes from the
//! later transaction log with the same key. Records go through a bounded queue to a writer
//! task that appends them to object storage (a local folder or a bucket) in batches, one
//! object per batch; a full queue drops the record and says so, it never slows a request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use hmac::{Hmac, Mac};
use object_store::{path::Path, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::{mpsc, watch};

use crate::registry::{open_store, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum ExposureError {
    #[error("exposure key: {0}")]
    BadKey(String),
    #[error("{0}")]
    Store(#[from] RegistryError),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("{object} line {line}: {reason}")]
    BadRecord {
        object: String,
        line: usize,
        reason: String,
    },
}

/// The keyed hash that stands for a customer id in exposure records.
#[derive(Clone)]
pub struct CustomerKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomerKey(..)")
    }
}

impl CustomerKey {
    /// A short key would make the hashes guessable from a list of candidate ids.
    pub fn new(secret: &str) -> Result<Self, ExposureError> {
        if secret.len() < 16 {
            return Err(ExposureError::BadKey(format!(
                "{} bytes; use at least 16 random bytes",
                secret.len()
            )));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|e| ExposureError::BadKey(e.to_string()))?;
        Ok(CustomerKey { mac })
    }

    /// 128 bits of HMAC-SHA-256, hex: collisions are negligible, ids are not recoverable.
    pub fn hash(&self, customer_id: &str) -> String {
        let mut m = self.mac.clone();
        m.update(customer_id.as_bytes());
        hex::encode(&m.finalize().into_bytes()[..16])
    }
}

/// One scored assignment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exposure {
    /// [`CustomerKey::hash`] of the customer id.
    pub customer: String,
    pub experiment: String,
    pub arm: String,
    /// The version that answered; empty for the holdout.
    pub version: String,
    /// The scores given; absent for the holdout.
    pub churn_probability: Option<f64>,
    pub clv: Option<f64>,
    pub horizon_days: u32,
    /// The instant the customer was scored as of (RFC 3339): outcomes count from here.
    pub as_of: String,
    /// When the request was served (RFC 3339).
    pub at: String,
}

/// How the writer batches.
#[derive(Debug, Clone, Copy)]
pub struct SinkOptions {
    /// Records queued at most; past it records are dropped and counted.
    pub capacity: usize,
    /// Records per object at most.
    pub batch: usize,
    /// Longest a record waits in memory before it is written.
    pub interval: Duration,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            capacity: 100_000,
            batch: 10_000,
            interval: Duration::from_secs(5),
        }
    }
}

/// The request side of the log: cheap to clone, never blocks.
#[derive(Clone)]
pub struct ExposureLog {
    tx: mpsc::Sender<Exposure>,
    key: CustomerKey,
    pub dropped: Arc<AtomicU64>,
    /// Records accepted and not yet written (or given up): what a crash would lose now.
    pub pending: Arc<AtomicU64>,
}

impl ExposureLog {
    pub fn key(&self) -> &CustomerKey {
        &self.key
    }

    /// Queues a record; false when the queue is full and it was dropped.
    pub fn record(&self, e: Exposure) -> bool {
        // Counted before the send, so the writer never takes away what was not added yet.
        self.pending.fetch_add(1, Ordering::Relaxed);
        let ok = self.tx.try_send(e).is_ok();
        if !ok {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

/// What the writer did, returned when it stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct SinkStats {
    pub written: u64,
    pub objects: u64,
    pub failed_writes: u64,
    pub lost: u64,
}

/// The writer task's handle: [`close`](Self::close) flushes everything queued and stops it.
pub struct Writer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<SinkStats>,
}

impl Writer {
    pub async fn close(self, limit: Duration) -> Option<SinkStats> {
        let _ = self.stop.send(true);
        tokio::time::timeout(limit, self.task).await.ok()?.ok()
    }
}

/// Starts a writer appending to the folder or bucket prefix `url` names.
pub fn start(
    url: &str,
    key: CustomerKey,
    opts: SinkOptions,
) -> Result<(ExposureLog, Writer), ExposureError> {
    let (store, prefix) = open_store(url)?;
    Ok(start_on(store, prefix, key, opts))
}

/// Starts a writer appending under `prefix` of `store`.
pub fn start_on(
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    key: CustomerKey,
    opts: SinkOptions,
) -> (ExposureLog, Writer) {
    let (tx, rx) = mpsc::channel(opts.capacity.max(1));
    let (stop, stop_rx) = watch::channel(false);
    let instance = instance_name();
    let pending = Arc::new(AtomicU64::new(0));
    let sink = Sink {
        store,
        prefix,
        instance,
        opts,
        pending: pending.clone(),
    };
    let task = tokio::spawn(write_loop(sink, rx, stop_rx));
    (
        ExposureLog {
            tx,
            key,
            dropped: Arc::new(AtomicU64::new(0)),
            pending,
        },
        Writer { stop, task },
    )
}

/// Unique per process, so replicas never write the same object.
fn instance_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(63)
        .collect();
    format!(
        "{}-{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%3f"),
        if host.is_empty() { "host" } else { &host },
        std::process::id()
    )
}

/// Where and how the writer writes.
struct Sink {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    instance: String,
    opts: SinkOptions,
    pending: Arc<AtomicU64>,
}

impl Sink {
    /// `n` records left the buffer, written or given up.
    fn taken(&self, n: usize) {
        self.pending.fetch_sub(n as u64, Ordering::Relaxed);
    }
}

async fn write_loop(
    sink: Sink,
    mut rx: mpsc::Receiver<Exposure>,
    mut stop: watch::Receiver<bool>,
) -> SinkStats {
    let mut stats = SinkStats::default();
    let mut buf: Vec<Exposure> = Vec::new();
    // The first tick a full interval from now: `interval` fires at once, which would write
    // a first record alone in an object of its own.
    let opts = sink.opts;
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + opts.interval, opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // `due`: write now (a full batch, the interval, or closing).
        let (due, closing) = tokio::select! {
            r = rx.recv() => match r {
                Some(e) => {
                    buf.push(e);
                    (buf.len() >= opts.batch, false)
                }
                None => (true, true),
            },
            _ = tick.tick() => (true, false),
            _ = stop.changed() => (true, true),
        };
        if closing {
            // Take whatever was queued before the close.
            while let Ok(e) = rx.try_recv() {
                buf.push(e);
            }
        }
        if due && !buf.is_empty() {
            flush(&sink, &mut buf, &mut stats).await;
        }
        if closing {
            stats.lost += buf.len() as u64;
            sink.taken(buf.len());
            if stats.lost > 0 {
                tracing::error!(
                    records = stats.lost,
                    "exposure records could not be written"
                );
            }
            return stats;
        }
    }
}

async fn flush(sink: &Sink, buf: &mut Vec<Exposure>, stats: &mut SinkStats) {
    let (store, prefix, instance, opts) = (&sink.store, &sink.prefix, &sink.instance, &sink.opts);
    while !buf.is_empty() {
        let n = buf.len().min(opts.batch.max(1));
        let mut body = Vec::with_capacity(n * 256);
        let mut unwritable = 0;
        for e in &buf[..n] {
            if serde_json::to_writer(&mut body, e).is_ok() {
                body.push(b'\n');
            } else {
                unwritable += 1;
            }
        }
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let name = format!(
            "{instance}-{:06}.jsonl",
            stats.objects + stats.failed_writes
        );
        let key = prefix.clone().join(day).join(name);
        // Create-if-absent: an exposure object is never overwritten, whatever the names.
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match store
            .put_opts(&key, PutPayload::from_bytes(Bytes::from(body)), create)
            .await
        {
            Ok(_) => {
                // A record that cannot be encoded is lost, not written.
                stats.written += (n - unwritable) as u64;
                stats.lost += unwritable as u64;
                stats.objects += 1;
                buf.drain(..n);
                sink.taken(n);
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                // Someone holds this name: count it as a failed write so the next name differs.
                stats.failed_writes += 1;
            }
            Err(e) => {
                // Keep the records for the next tick; bound what is held.
                stats.failed_writes += 1;
                tracing::warn!(error = %e, records = n, "cannot write exposures; will retry");
                let cap = opts.capacity.max(1);
                if buf.len() > cap {
                    let extra = buf.len() - cap;
                    buf.drain(..extra);
                    stats.lost += extra as u64;
                    sink.taken(extra);
                }
                return;
            }
        }
    }
}

/// Every exposure under `url`, in object then line order.
pub async fn read_all(url: &str) -> Result<Vec<Exposure>, ExposureError> {
    let (store, prefix) = open_store(url)?;
    read_from(&store, &prefix).await
}

/// Every exposure under `prefix` of `store`, in object then line order.
pub async fn read_from(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
) -> Result<Vec<Exposure>, ExposureError> {
    let mut keys: Vec<Path> = store
        .list(Some(prefix))
        .map_ok(|m| m.location)
        .try_collect()
        .await?;
    keys.retain(|k| k.as_ref().ends_with(".jsonl"));
    keys.sort();
    let mut out = Vec::new();
    for k in keys {
        let bytes = store.get(&k).await?.bytes().await?;
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let e: Exposure =
                serde_json::from_slice(line).map_err(|e| ExposureError::BadRecord {
                    object: k.to_string(),
                    line: i + 1,
                    reason: e.to_string(),
                })?;
            out.push(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposure(i: usize) -> Exposure {
        Exposure {
            customer: format!("c{i}"),
            experiment: "e".into(),
            arm: "control".into(),
            version: "v1".into(),
            churn_probability: Some(0.5),
            clv: Some(10.0),
            horizon_days: 90,
            as_of: "2024-01-01T00:00:00Z".into(),
            at: "2024-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn the_keyed_hash_is_stable_keyed_and_hides_the_id() {
        let a = CustomerKey::new("0123456789abcdef-key-a").unwrap();
        let b = CustomerKey::new("0123456789abcdef-key-b").unwrap();
        assert_eq!(a.hash("C0000001"), a.hash("C0000001"));
        assert_ne!(a.hash("C0000001"), a.hash("C0000002"));
        assert_ne!(a.hash("C0000001"), b.hash("C0000001"));
        assert_eq!(a.hash("C0000001").len(), 32);
        assert!(!a.hash("C0000001").contains("0000001"));
        assert!(CustomerKey::new("short").is_err());
    }

    /// Batches split at `batch`, and closing flushes what is still queued.
    #[tokio::test]
    async fn close_flushes_every_queued_record_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().to_str().unwrap().to_string();
        let key = CustomerKey::new("0123456789abcdef").unwrap();
        let opts = SinkOptions {
            capacity: 1000,
            batch: 40,
            interval: Duration::from_secs(3600),
        };
        let (log, writer) = start(&url, key, opts).unwrap();
        for i in 0..100 {
            assert!(log.record(exposure(i)));
        }
        let stats = writer.close(Duration::from_secs(10)).await.unwrap();
        assert_eq!(stats.written, 100);
        assert_eq!(stats.lost, 0);
        let back = read_all(&url).await.unwrap();
        assert_eq!(back.len(), 100);
        let mut ids: Vec<_> = back.iter().map(|e| e.customer.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 100);
        assert!(stats.objects >= 3, "{stats:?}");
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let key = CustomerKey::new("0123456789abcdef").unwrap();
        let opts = SinkOptions {
            capacity: 5,
            batch: 1000,
            interval: Duration::from_secs(3600),
        };
        let (log, writer) = start(dir.path().to_str().unwrap(), key, opts).unwrap();
        // The writer cannot run between these (current-thread runtime), so the queue fills.
        let accepted = (0..20).filter(|&i| log.record(exposure(i))).count();
        assert_eq!(accepted, 5);
        assert_eq!(log.dropped.load(Ordering::Relaxed), 15);
        let stats = writer.close(Duration::from_secs(10)).await.unwrap();
        assert_eq!(stats.written, 5);
    }

    /// An object already at the writer's next name is kept, and the batch goes to the next.
    #[tokio::test]
    async fn a_taken_name_is_never_overwritten() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let prefix = Path::from("exp");
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let taken = prefix.clone().join(day).join("inst-000000.jsonl");
        let other = serde_json::to_string(&exposure(999)).unwrap() + "\n";
        store.put(&taken, other.clone().into()).await.unwrap();
        let (tx, rx) = mpsc::channel(10);
        let (stop, stop_rx) = watch::channel(false);
        let opts = SinkOptions {
            capacity: 10,
            batch: 10,
            interval: Duration::from_secs(3600),
        };
        let sink = Sink {
            store: store.clone(),
            prefix: prefix.clone(),
            instance: "inst".into(),
            opts,
            pending: Arc::new(AtomicU64::new(1)),
        };
        let pending = sink.pending.clone();
        let task = tokio::spawn(write_loop(sink, rx, stop_rx));
        tx.send(exposure(1)).await.unwrap();
        stop.send(true).unwrap();
        let stats = task.await.unwrap();
        assert_eq!((stats.written, stats.objects, stats.lost), (1, 1, 0));
        assert_eq!(
            pending.load(Ordering::Relaxed),
            0,
            "a written record still pending"
        );
        let kept = store.get(&taken).await.unwrap().bytes().await.unwrap();
        assert_eq!(kept, other.as_bytes());
        let all = read_from(&store, &prefix).await.unwrap();
        let mut ids: Vec<_> = all.iter().map(|e| e.customer.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["c1", "c999"]);
    }

    #[tokio::test]
    async fn a_bad_line_is_named_with_its_object_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = serde_json::to_string(&exposure(1)).unwrap();
        std::fs::write(dir.path().join("a.jsonl"), format!("{good}\n{{oops\n")).unwrap();
        let err = read_all(dir.path().to_str().unwrap()).await.unwrap_err();
        assert!(err.to_string().starts_with("a.jsonl line 2: "), "{err}");
    }
}

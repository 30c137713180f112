//! The model versions a server holds: the active one (following an alias, swapped atomically),
//! the running experiment's versions (following the alias's traffic document, swapped the same
//! way) and a small bounded cache of pinned ones. Loading (reading, decoding, warming) runs
//! on the server's model thread, never on the request threads, and a replaced version is
//! dropped there too once the last request holding it is done; a version or a traffic
//! document that fails to load leaves the old one serving. A failed load of the alias's
//! version is tried again with backoff for as long as the alias names it, so a registry fault
//! clears by itself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use super::metrics::Metrics;
use crate::registry::{Registry, RegistryError};
use crate::routing::{Experiment, Routing, RoutingError};
use crate::scoring::{Model, SchemaMismatch, ScoringError};

/// Why a version or a traffic document could not be put in service.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Schema(#[from] SchemaMismatch),
    #[error(transparent)]
    Routing(#[from] RoutingError),
}

impl LoadError {
    /// What a request that pinned `version` is told: a store outage is worth a retry
    /// (`UNAVAILABLE`), a version that does not exist is not, nor is one that cannot serve.
    fn for_request(self, version: &str) -> ScoringError {
        let version = version.to_string();
        match self {
            LoadError::Registry(RegistryError::VersionNotFound(_)) => {
                ScoringError::VersionNotFound(version)
            }
            LoadError::Registry(RegistryError::Store(e)) => ScoringError::VersionUnavailable {
                version,
                reason: e.to_string(),
            },
            other => ScoringError::VersionUnusable {
                version,
                reason: other.to_string(),
            },
        }
    }
}

/// How long a pinned version that failed to load is answered from memory before it is
/// tried again.
pub const PIN_FAILURE_TTL: Duration = Duration::from_secs(30);

/// How long a pinned version stays in the cache, unused, before a new pin may take its place.
const PIN_RESIDENCY: Duration = Duration::from_secs(60);

type PinResult = Result<Arc<Model>, ScoringError>;

/// One pinned version: loading (watch the channel), loaded, or failed.
struct Pin {
    rx: tokio::sync::watch::Receiver<Option<PinResult>>,
    failed_at: Option<std::time::Instant>,
    last_used: std::time::Instant,
}

/// The pinned versions held, at most `cap`.
struct PinCache {
    pins: std::collections::HashMap<String, Pin>,
    cap: usize,
}

impl PinCache {
    fn new(cap: usize) -> Self {
        PinCache {
            pins: Default::default(),
            cap: cap.max(1),
        }
    }

    /// The channel the version's load answers on, and the sender when the caller must start
    /// the load. A full cache makes room only from a pin unused for [`PIN_RESIDENCY`].
    #[allow(clippy::type_complexity)]
    fn lookup(
        &mut self,
        version: &str,
    ) -> Result<
        (
            tokio::sync::watch::Receiver<Option<PinResult>>,
            Option<tokio::sync::watch::Sender<Option<PinResult>>>,
        ),
        ScoringError,
    > {
        let now = std::time::Instant::now();
        if let Some(p) = self.pins.get_mut(version) {
            let retry = p.failed_at.is_some_and(|t| now - t >= PIN_FAILURE_TTL);
            if !retry {
                p.last_used = now;
                return Ok((p.rx.clone(), None));
            }
            self.pins.remove(version);
        }
        if self.pins.len() >= self.cap {
            let idle = self
                .pins
                .iter()
                .filter(|(_, p)| p.rx.borrow().is_some() && now - p.last_used >= PIN_RESIDENCY)
                .min_by_key(|(_, p)| p.last_used)
                .map(|(v, _)| v.clone());
            match idle {
                Some(v) => {
                    self.pins.remove(&v);
                }
                None => return Err(ScoringError::TooManyPins(self.cap)),
            }
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        let pin = Pin {
            rx: rx.clone(),
            failed_at: None,
            last_used: now,
        };
        self.pins.insert(version.to_string(), pin);
        Ok((rx, Some(tx)))
    }

    /// Notes when a load failed, so it is retried after [`PIN_FAILURE_TTL`].
    fn settle(&mut self, version: &str, r: &PinResult) {
        if let Some(p) = self.pins.get_mut(version) {
            if r.is_err() && p.failed_at.is_none() {
                p.failed_at = Some(std::time::Instant::now());
            }
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The thread that decodes a server's versions and drops the ones replaced. One long-lived
/// thread rather than the blocking pool: a version's memory is then allocated and freed by
/// the same thread, whose allocator heap hands it back when the version goes. On the pool,
/// the threads that had loaded versions came and went, and their abandoned heaps kept the
/// memory (RSS grew 45 % over a 10-minute soak of hot swaps). It ends with its server.
struct ModelThread {
    jobs: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
}

impl ModelThread {
    fn start() -> Arc<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("model-loader".into())
            .spawn(move || {
                for job in rx {
                    // A panic in one load must not take the thread, and every later load.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
        if let Err(e) = &spawned {
            tracing::error!(error = %e, "cannot start the model thread; no version can load");
        }
        Arc::new(ModelThread {
            jobs: Mutex::new(spawned.ok().map(|_| tx)),
        })
    }

    /// Runs `job` on the thread; false if it is not running.
    fn run(&self, job: Job) -> bool {
        let jobs = self.jobs.lock();
        jobs.ok()
            .and_then(|j| j.as_ref().map(|tx| tx.send(job).is_ok()))
            .unwrap_or(false)
    }
}

/// Reads, verifies and warms a version on the model thread: decoding and warming cost tens
/// of milliseconds of CPU, which on a request thread stall every request queued behind it.
/// Loads run one at a time (a slow store delays the next load, never a request).
async fn load_off_thread(
    thread: &ModelThread,
    registry: Registry,
    version: String,
) -> Result<Arc<Model>, LoadError> {
    let rt = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = Box::new(move || {
        let r = rt.block_on(async {
            let (manifest, bundle) = registry.load(&version).await?;
            let model = Model::new(manifest, bundle)?;
            let warm = crate::scoring::Explain {
                reasons: true,
                ..Default::default()
            };
            let _ = crate::scoring::score(&model, &[0.0; crate::features::N_FEATURES], 0, warm);
            Ok(Arc::new(model))
        });
        let _ = tx.send(r);
    });
    let gone = || {
        LoadError::Registry(RegistryError::Store(object_store::Error::Generic {
            store: "loader",
            source: "the model thread is not running".into(),
        }))
    };
    if !thread.run(job) {
        return Err(gone());
    }
    rx.await.unwrap_or_else(|_| Err(gone()))
}

/// Drops a replaced version on the model thread once no request holds it: freeing a
/// forest's pages on a request thread stalled the tail at every hot swap.
fn retire<T: Send + Sync + 'static>(thread: &Arc<ModelThread>, old: Arc<T>) {
    let thread = thread.clone();
    tokio::spawn(async move {
        while Arc::strong_count(&old) > 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        thread.run(Box::new(move || drop(old)));
    });
}

/// The first wait before a failed load of the alias's version is tried again; it doubles
/// with each failure up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(2);
pub const RETRY_MAX: Duration = Duration::from_secs(300);

fn retry_backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    RETRY_FIRST.saturating_mul(1 << doublings).min(RETRY_MAX)
}

/// A version the alias names that failed to load.
struct Failed {
    version: String,
    attempts: u32,
    retry_at: std::time::Instant,
}

/// The health service that is SERVING only while the served version is the alias's: a
/// failed load turns it NOT_SERVING until a retry succeeds. Readiness keeps following
/// [`HEALTH_SERVICES`], because a registry fault hits every replica at once and taking them
/// all out of service would turn a stale model into an outage.
pub const CURRENT_SERVICE: &str = "current";

/// How often a server that serves nothing says why.
const UNSERVED_WARNING_EVERY: Duration = Duration::from_secs(60);

/// The served version's drift now, for the metrics (held weakly: the metrics outlive no one).
pub fn drift_source(models: &Arc<Models>) -> super::metrics::DriftSource {
    let models = Arc::downgrade(models);
    Box::new(move || {
        let m = models.upgrade()?.active()?;
        Some(m.drift.as_ref()?.report(chrono::Utc::now().timestamp()))
    })
}

/// The gRPC service names whose health follows the model.
pub const HEALTH_SERVICES: [&str; 2] = ["", "loyalscore.v1.Scoring"];

pub struct Models {
    active: ArcSwapOption<Model>,
    /// The running experiment, if any.
    routing: ArcSwapOption<Routing>,
    /// The traffic record applied last (0: none), and the last one that failed.
    traffic_seq: Mutex<(u64, Option<u64>)>,
    /// Pinned versions, loaded once and shared by every request that names them.
    pins: Mutex<PinCache>,
    /// The alias's version that failed to load last, retried with backoff while named.
    failed: Mutex<Option<Failed>>,
    /// The corrupt alias records reported last.
    corrupt_seen: Mutex<Vec<u64>>,
    registry: Registry,
    alias: String,
    metrics: Arc<Metrics>,
    health: HealthReporter,
    /// Serialises refreshes (the poller and an admin Promote may race).
    refresh_lock: tokio::sync::Mutex<()>,
    /// Where versions are decoded and dropped.
    thread: Arc<ModelThread>,
}

impl Models {
    pub fn new(
        registry: Registry,
        alias: String,
        (metrics, max_pins): (Arc<Metrics>, usize),
        health: HealthReporter,
    ) -> Self {
        Models {
            active: ArcSwapOption::empty(),
            routing: ArcSwapOption::empty(),
            traffic_seq: Mutex::new((0, None)),
            pins: Mutex::new(PinCache::new(max_pins)),
            failed: Mutex::new(None),
            corrupt_seen: Mutex::new(Vec::new()),
            registry,
            alias,
            metrics,
            health,
            refresh_lock: tokio::sync::Mutex::new(()),
            thread: ModelThread::start(),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// The serving version; each request takes it once and keeps it to the end.
    pub fn active(&self) -> Option<Arc<Model>> {
        self.active.load_full()
    }

    /// The running experiment; each request (or batch) takes it once.
    pub fn routing(&self) -> Option<Arc<Routing>> {
        self.routing.load_full()
    }

    /// The model for a pinned version: the active one, or the pin cache's (loaded once, off
    /// the request threads, for every request naming it; a failure is remembered for
    /// [`PIN_FAILURE_TTL`]). More distinct pins than the cache holds are refused.
    pub async fn pinned(&self, version: &str) -> Result<Arc<Model>, ScoringError> {
        if let Some(m) = self.active().filter(|m| m.version == version) {
            return Ok(m);
        }
        // Checked before it reaches a log line or a store key.
        if !crate::model::is_safe_name(version) {
            return Err(ScoringError::invalid(
                "version",
                "is not a version id (letters, digits, '.', '_' and '-' only)",
            ));
        }
        let (mut rx, start) = {
            let mut cache = self.pins.lock().map_err(|_| ScoringError::NotReady)?;
            cache.lookup(version)?
        };
        if let Some(tx) = start {
            let (registry, v, metrics, thread) = (
                self.registry.clone(),
                version.to_string(),
                self.metrics.clone(),
                self.thread.clone(),
            );
            tokio::spawn(async move {
                let r = load_off_thread(&thread, registry, v.clone()).await.map_err(|e| {
                    if matches!(e, LoadError::Registry(RegistryError::Store(_))) {
                        tracing::warn!(version = %v, error = %e, "pinned version cannot be loaded: the registry is unavailable");
                    } else {
                        tracing::debug!(version = %v, error = %e, "pinned version cannot be used");
                    }
                    e.for_request(&v)
                });
                let outcome = if r.is_ok() { "ok" } else { "failed" };
                metrics.pin_loads.with_label_values(&[outcome]).inc();
                let _ = tx.send(Some(r));
            });
        }
        let r = loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                break r;
            }
            if rx.changed().await.is_err() {
                break Err(ScoringError::NotReady);
            }
        };
        if let Ok(mut cache) = self.pins.lock() {
            cache.settle(version, &r);
        }
        r
    }

    /// Loads and verifies a version, then warms it, on the model thread.
    async fn load(&self, version: &str) -> Result<Arc<Model>, LoadError> {
        load_off_thread(&self.thread, self.registry.clone(), version.to_string()).await
    }

    /// Reads the alias and its traffic document and applies what changed. Returns the version
    /// the alias serves afterwards.
    pub async fn refresh(&self) -> Option<String> {
        let _guard = self.refresh_lock.lock().await;
        // Traffic first: on a start with an experiment running, its routing is in place
        // before the alias's version turns health to SERVING, so no customer meets the
        // alias's version where their arm's should answer.
        self.refresh_traffic().await;
        self.refresh_alias().await
    }

    /// Builds the routing for a new traffic record (loading versions not held yet) and swaps
    /// it in; a stop record clears it. A record that cannot be applied keeps the old routing.
    async fn refresh_traffic(&self) {
        let record = match self.registry.traffic(&self.alias).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                self.metrics
                    .traffic_loads
                    .with_label_values(&["failed"])
                    .inc();
                tracing::warn!(alias = %self.alias, error = %e, "cannot read the traffic document; keeping the current routing");
                return;
            }
        };
        let (applied, failed) = self.traffic_seq.lock().map(|g| *g).unwrap_or((0, None));
        if record.seq == applied || failed == Some(record.seq) {
            return;
        }
        let outcome = match &record.experiment {
            None => Ok(None),
            Some(exp) => self.build_routing(record.seq, exp).await.map(Some),
        };
        match outcome {
            Ok(routing) => {
                match &routing {
                    Some(r) => {
                        self.metrics.experiment_started(&r.experiment);
                        tracing::info!(experiment = %r.experiment, seq = record.seq, "experiment routing now in force")
                    }
                    None => {
                        tracing::info!(seq = record.seq, alias = %self.alias, "experiment stopped; all traffic follows the alias")
                    }
                }
                if let Some(old) = self.routing.swap(routing.map(Arc::new)) {
                    retire(&self.thread, old);
                }
                self.metrics.traffic_loads.with_label_values(&["ok"]).inc();
                if let Ok(mut g) = self.traffic_seq.lock() {
                    *g = (record.seq, None);
                }
            }
            Err(e) => {
                self.metrics
                    .traffic_loads
                    .with_label_values(&["failed"])
                    .inc();
                tracing::error!(seq = record.seq, error = %e, "cannot apply the traffic document; the previous routing stays");
                if let Ok(mut g) = self.traffic_seq.lock() {
                    g.1 = Some(record.seq);
                }
            }
        }
    }

    async fn build_routing(&self, seq: u64, exp: &Experiment) -> Result<Routing, LoadError> {
        // Versions already in memory are shared, not loaded twice.
        let mut held: Vec<Arc<Model>> = self.active().into_iter().collect();
        if let Some(r) = self.routing() {
            held.extend(r.versions().cloned());
        }
        let mut loaded = Vec::new();
        for v in exp.versions() {
            if let Some(m) = held.iter().find(|m| m.version == v) {
                loaded.push(m.clone());
            } else {
                loaded.push(self.load(&v).await?);
            }
        }
        Ok(Routing::new(seq, exp, |v| {
            loaded.iter().find(|m| m.version == v).cloned()
        })?)
    }

    async fn refresh_alias(&self) -> Option<String> {
        let current = self.active().map(|m| m.version.clone());
        let target = match self.registry.alias_state(&self.alias).await {
            Ok(state) => {
                self.note_corrupt(&state.corrupt);
                match state.current {
                    Some(r) => r.version,
                    None => return current,
                }
            }
            Err(e) => {
                tracing::warn!(alias = %self.alias, error = %e, "cannot read the alias; keeping the current version");
                return current;
            }
        };
        if current.as_deref() == Some(target.as_str()) {
            self.say_current(true).await;
            return current;
        }
        if !self.retry_due(&target) {
            return current;
        }
        // A version an experiment already holds is shared, not loaded twice.
        let held = self
            .routing()
            .and_then(|r| r.versions().find(|m| m.version == target).cloned());
        let loaded = match held {
            Some(m) => Ok(m),
            None => self.load(&target).await,
        };
        match loaded {
            Ok(model) => {
                self.swap_in(model, current.as_deref()).await;
                Some(target)
            }
            Err(e) => {
                self.metrics.loads.with_label_values(&["failed"]).inc();
                let retry_in = self.note_failure(&target);
                tracing::error!(version = %target, error = %e, retry_in_secs = retry_in.as_secs(), "failed to load; the previous version keeps serving");
                self.say_current(false).await;
                current
            }
        }
    }

    /// Puts a loaded version in service: the swap, its metrics and health.
    async fn swap_in(&self, model: Arc<Model>, previous: Option<&str>) {
        let version = model.version.clone();
        if let Some(old) = self.active.swap(Some(model)) {
            retire(&self.thread, old);
        }
        if let Ok(mut f) = self.failed.lock() {
            *f = None;
        }
        self.metrics.loads.with_label_values(&["ok"]).inc();
        if let Some(old) = previous {
            let _ = self.metrics.active.remove_label_values(&[old]);
        }
        self.metrics
            .active
            .with_label_values(&[version.as_str()])
            .set(1);
        self.metrics.model_served.set(1);
        for s in HEALTH_SERVICES {
            self.health
                .set_service_status(s, ServingStatus::Serving)
                .await;
        }
        self.say_current(true).await;
        tracing::info!(%version, previous = %previous.unwrap_or("none"), alias = %self.alias, "now serving");
    }

    /// Whether a load of `target` may be tried now: always, unless it failed and its backoff
    /// has not passed.
    fn retry_due(&self, target: &str) -> bool {
        let failed = self.failed.lock().ok();
        match failed.as_deref().and_then(Option::as_ref) {
            Some(f) if f.version == target => std::time::Instant::now() >= f.retry_at,
            _ => true,
        }
    }

    /// Notes a failed load of `target`; returns how long until it is tried again.
    fn note_failure(&self, target: &str) -> Duration {
        let Ok(mut failed) = self.failed.lock() else {
            return RETRY_FIRST;
        };
        let attempts = match failed.as_ref() {
            Some(f) if f.version == target => f.attempts + 1,
            _ => 1,
        };
        let wait = retry_backoff(attempts);
        *failed = Some(Failed {
            version: target.to_string(),
            attempts,
            retry_at: std::time::Instant::now() + wait,
        });
        wait
    }

    /// The `current` health service and the stale gauge: whether the alias's version is the
    /// one served.
    async fn say_current(&self, current: bool) {
        self.metrics.model_stale.set(i64::from(!current));
        let status = if current {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health
            .set_service_status(CURRENT_SERVICE, status)
            .await;
    }

    /// Reports corrupt records on top of the alias: the gauge always, a warning when the set
    /// changes (not at every poll).
    fn note_corrupt(&self, corrupt: &[crate::registry::CorruptRecord]) {
        self.metrics.alias_corrupt.set(corrupt.len() as i64);
        let seqs: Vec<u64> = corrupt.iter().map(|c| c.seq).collect();
        let Ok(mut seen) = self.corrupt_seen.lock() else {
            return;
        };
        if *seen != seqs {
            if let Some(c) = corrupt.last() {
                tracing::warn!(alias = %self.alias, records = ?seqs, reason = %c.reason, "corrupt alias records skipped; the last readable record is followed. `loyalscore alias repair` supersedes them");
            }
            *seen = seqs;
        }
    }

    /// Says, at warn level, that nothing is served and what the registry lacks: at start a
    /// misspelt alias or registry path would otherwise leave health NOT_SERVING in silence.
    async fn warn_unserved(&self) {
        let why = self.registry.unserved(&self.alias).await;
        tracing::warn!(
            registry = %self.registry.url(),
            alias = %self.alias,
            "nothing to serve, health stays NOT_SERVING: {why}"
        );
    }

    /// Follows the alias until `stop` resolves, every `interval`. (The admin RPCs that move
    /// the alias call [`refresh`](Self::refresh) themselves, so they answer after the swap.)
    pub async fn follow(
        self: Arc<Self>,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut last_warning: Option<std::time::Instant> = None;
        loop {
            self.refresh().await;
            if self.active().is_none() {
                let due = last_warning.is_none_or(|t| t.elapsed() >= UNSERVED_WARNING_EVERY);
                if due {
                    self.warn_unserved().await;
                    last_warning = Some(std::time::Instant::now());
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_two_seconds_to_five_minutes() {
        let secs: Vec<u64> = (1..=10).map(|n| retry_backoff(n).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_backoff(u32::MAX), RETRY_MAX);
    }
}

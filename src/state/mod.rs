//! Live customer state: each customer's [`CustomerSummary`], kept up to date by purchase
//! events, so a caller can score by customer id alone.
//!
//! Events may arrive twice and out of order. A customer's state is the summary of every event
//! older than a *watermark* (their latest event time minus the lateness window), folded in
//! order, plus the events since, kept sorted; the summary a score sees is the settled one with
//! the pending events folded on top. An event inside the window therefore lands exactly where
//! it would in the sorted history; an event older than the window is refused (counted as
//! late); an event id seen before (pending, or among the latest settled ones) is ignored. So
//! the state is always the fold of the sorted history of the accepted events, whatever order
//! they came in, and a replay changes nothing.
//!
//! Two stores keep it: an embedded one on local disk ([`embedded`], the default: nothing to
//! install) and Redis ([`redis`], shared by many replicas, updated by compare-and-swap so
//! concurrent writers never lose a purchase). Both key a customer by a salted hash of their
//! id ([`customer_key`]), so a store never holds an id in clear. Stored values are tagged with
//! the feature schema they were folded for; another schema is refused, never misread.
//! Nothing here knows gRPC.

pub mod embedded;
pub mod redis;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::features::{CustomerSummary, FeatureError, Transaction, SCHEMA_VERSION};
use crate::hashing::stable_hash;

/// Ids of settled events remembered per customer, so that a replay just past the watermark
/// is reported as a duplicate (it is older than the watermark, so it could not apply anyway;
/// this only makes the count say what it was).
const SETTLED_IDS: usize = 16;

/// Events held unsettled per customer at most: a burst beyond it inside one lateness window
/// is refused rather than held without bound.
pub const MAX_PENDING: usize = 10_000;

/// How far ahead of the server's clock an event may be: callers' clocks drift, but an event
/// a day ahead is a bug, and it would hold the customer's watermark (and their score) there.
pub const MAX_AHEAD_SECS: i64 = 3_600;

/// One purchase (or return) of one customer, with the caller's id for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub customer_id: String,
    pub event_id: String,
    pub tx: Transaction,
}

/// The key an event is ordered and recognised by within its customer.
pub fn event_key(event_id: &str) -> u64 {
    stable_hash("event", event_id)
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    /// Its id was seen before; nothing changed.
    Duplicate,
    /// Older than the customer's lateness window; refused.
    Late,
    /// Refused: the customer already holds `MAX_PENDING` events in the window.
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Late => "late",
            Outcome::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    key: u64,
    tx: Transaction,
}

/// One customer's stored state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerState {
    /// Every event older than the watermark, folded in (time, key) order.
    settled: CustomerSummary,
    /// Events at or after the watermark, sorted by (time, key).
    pending: Vec<Pending>,
    /// The latest event time accepted.
    max_ts: i64,
    /// Keys of the latest settled events.
    settled_keys: VecDeque<u64>,
}

impl CustomerState {
    /// Applies one event with the lateness window `lateness` (seconds).
    pub fn apply(&mut self, e: &Event, lateness: i64) -> Result<Outcome, FeatureError> {
        self.apply_keyed(event_key(&e.event_id), &e.tx, lateness)
    }

    /// [`Self::apply`] for an event already reduced to its [`event_key`] (a journal's replay).
    pub fn apply_keyed(
        &mut self,
        key: u64,
        tx: &Transaction,
        lateness: i64,
    ) -> Result<Outcome, FeatureError> {
        tx.validate()?;
        if self.settled_keys.contains(&key) || self.pending.iter().any(|p| p.key == key) {
            return Ok(Outcome::Duplicate);
        }
        let started = !self.pending.is_empty() || !self.settled.is_empty() || self.max_ts != 0;
        if started && tx.ts < self.watermark(lateness) {
            return Ok(Outcome::Late);
        }
        if self.pending.len() >= MAX_PENDING {
            return Ok(Outcome::Rejected);
        }
        let at = self
            .pending
            .partition_point(|p| (p.tx.ts, p.key) < (tx.ts, key));
        self.pending.insert(at, Pending { key, tx: *tx });
        self.max_ts = if started {
            self.max_ts.max(tx.ts)
        } else {
            tx.ts
        };
        self.settle(lateness)?;
        Ok(Outcome::Applied)
    }

    /// Events before this instant are settled: no later event may precede them.
    fn watermark(&self, lateness: i64) -> i64 {
        self.max_ts.saturating_sub(lateness)
    }

    /// Folds the pending events older than the watermark into the settled summary.
    fn settle(&mut self, lateness: i64) -> Result<(), FeatureError> {
        let w = self.watermark(lateness);
        let n = self.pending.partition_point(|p| p.tx.ts < w);
        for p in self.pending.drain(..n) {
            self.settled.update(&p.tx)?;
            self.settled_keys.push_back(p.key);
            if self.settled_keys.len() > SETTLED_IDS {
                self.settled_keys.pop_front();
            }
        }
        Ok(())
    }

    /// The summary of every accepted event, in time order.
    pub fn summary(&self) -> Result<CustomerSummary, FeatureError> {
        let mut s = self.settled.clone();
        for p in &self.pending {
            s.update(&p.tx)?;
        }
        Ok(s)
    }

    /// When a score by id without an `as_of` is taken: now, or just after the customer's
    /// latest event if that is later (a caller's clock a little ahead of ours), so that a
    /// purchase recorded this second is in the score.
    pub fn scored_at(&self, now: i64) -> i64 {
        now.max(self.max_ts.saturating_add(1))
    }

    /// The latest accepted event time.
    pub fn last_event_ts(&self) -> i64 {
        self.max_ts
    }

    /// Events held unsettled.
    pub fn pending_events(&self) -> usize {
        self.pending.len()
    }
}

/// Applies a customer's events (in arrival order) to their state; the outcome of each.
pub fn apply_all(
    state: &mut CustomerState,
    events: &[&Event],
    lateness: i64,
) -> Result<Vec<Outcome>, FeatureError> {
    events.iter().map(|e| state.apply(e, lateness)).collect()
}

/// Stored values: a magic, the feature schema they were folded for, a format, then bincode.
const MAGIC: &[u8; 4] = b"LYST";
const FORMAT: u32 = 1;

pub fn encode(state: &CustomerState) -> Result<Vec<u8>, StateError> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
    out.extend_from_slice(&FORMAT.to_le_bytes());
    bincode::serialize_into(&mut out, state).map_err(|e| StateError::Encode(e.to_string()))?;
    Ok(out)
}

pub fn decode(bytes: &[u8]) -> Result<CustomerState, StateError> {
    if bytes.len() < 12 || &bytes[..4] != MAGIC {
        return Err(StateError::Corrupt(
            "not a loyalscore customer state".into(),
        ));
    }
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let (schema, format) = (word(4), word(8));
    if schema != SCHEMA_VERSION {
        return Err(StateError::Schema {
            found: schema,
            want: SCHEMA_VERSION,
        });
    }
    if format != FORMAT {
        return Err(StateError::Corrupt(format!("state format {format}")));
    }
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(bytes.len() as u64)
        .deserialize(&bytes[12..])
        .map_err(|e| StateError::Corrupt(e.to_string()))
}

/// An erasure, kept without the customer id in clear: a salted hash lets a later request
/// check "was this customer erased?" without the record naming anyone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Erasure {
    /// [`customer_key`]: SHA-256 of the store's salt and the customer id, hex.
    pub customer: String,
    pub at: String,
    pub actor: String,
    pub reason: String,
    /// Whether there was state to erase.
    pub found: bool,
}

/// The salted hash a store keys a customer by, and that stands for them in an erasure
/// record: the store never holds a customer id in clear.
pub fn customer_key(salt: &str, customer_id: &str) -> String {
    hex::encode(customer_digest(salt, customer_id))
}

/// [`customer_key`] as bytes (the embedded store's key: half the size of the hex).
pub fn customer_digest(salt: &str, customer_id: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0u8]);
    h.update(customer_id.as_bytes());
    h.finalize().into()
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("customer state was folded for feature schema v{found}; this build computes v{want}: reload it (loyalscore state load)")]
    Schema { found: u32, want: u32 },
    #[error("corrupt customer state: {0}")]
    Corrupt(String),
    #[error("cannot encode customer state: {0}")]
    Encode(String),
    #[error("{0}")]
    Features(#[from] FeatureError),
    #[error("state store {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("embedded state store: {0}")]
    Embedded(String),
    #[error("redis: {0}")]
    Redis(String),
    #[error("state store busy: {0}")]
    Contended(String),
}

/// Where customer state is kept. Every implementation applies a batch atomically per
/// customer: concurrent writers to one customer never lose an event.
#[async_trait::async_trait]
pub trait CustomerStore: Send + Sync {
    /// Applies events with the lateness window (seconds); one outcome per event, in order.
    async fn apply(&self, events: &[Event], lateness: i64) -> Result<Vec<Outcome>, StateError>;

    async fn get(&self, customer_id: &str) -> Result<Option<CustomerState>, StateError>;

    /// Several customers' states at once (a BatchScore's), in order.
    async fn get_many(&self, ids: &[&str]) -> Result<Vec<Option<CustomerState>>, StateError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.get(id).await?);
        }
        Ok(out)
    }

    /// Replaces whole states (the bulk load).
    async fn put_all(&self, states: Vec<(String, CustomerState)>) -> Result<(), StateError>;

    /// Erases a customer's state and records the erasure (without the id in clear).
    async fn forget(
        &self,
        customer_id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<Erasure, StateError>;

    /// Every erasure recorded, oldest first.
    async fn erasures(&self) -> Result<Vec<Erasure>, StateError>;

    /// Sets each customer's *mark* (the segment last published for them) to the one given,
    /// atomically per customer; for each, the mark it replaced (`Some(None)`: there was none)
    /// or `None` when it already was that segment. Whoever replaces a mark is the one writer
    /// that publishes the change, so a change is published at most once, by one replica.
    async fn set_marks(
        &self,
        marks: &[(&str, &str)],
    ) -> Result<Vec<Option<Option<String>>>, StateError>;
}

/// Why an event time is refused as too far ahead of the server's clock `now`, if it is.
pub fn too_far_ahead(ts: i64, now: i64) -> Option<String> {
    let ahead = ts.saturating_sub(now);
    (ahead > MAX_AHEAD_SECS).then(|| {
        format!("is {ahead} s ahead of the server's clock (at most {MAX_AHEAD_SECS} s is accepted)")
    })
}

/// Groups a batch by customer, keeping each customer's events in arrival order: the unit
/// every store applies atomically.
pub fn by_customer(events: &[Event]) -> Vec<(&str, Vec<(usize, &Event)>)> {
    let mut groups: Vec<(&str, Vec<(usize, &Event)>)> = Vec::new();
    let mut at: std::collections::HashMap<&str, usize> = Default::default();
    for (i, e) in events.iter().enumerate() {
        let slot = *at.entry(e.customer_id.as_str()).or_insert_with(|| {
            groups.push((e.customer_id.as_str(), Vec::new()));
            groups.len() - 1
        });
        groups[slot].1.push((i, e));
    }
    groups
}

/// Opens the store `spec` names: `redis://...` for Redis, `off` for none, otherwise a file
/// path for the embedded store.
pub async fn open(spec: &str) -> Result<Option<std::sync::Arc<dyn CustomerStore>>, StateError> {
    if spec.is_empty() || spec.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        return Ok(Some(std::sync::Arc::new(
            redis::RedisStore::connect(spec).await?,
        )));
    }
    let path = std::path::PathBuf::from(spec);
    let store = tokio::task::spawn_blocking(move || embedded::EmbeddedStore::open(&path))
        .await
        .map_err(|e| StateError::Embedded(e.to_string()))??;
    Ok(Some(std::sync::Arc::new(store)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::DAY;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    fn ev(id: &str, day: i64, amount: f64) -> Event {
        Event {
            customer_id: "c".into(),
            event_id: id.into(),
            tx: Transaction::new(20_000 * DAY + day * DAY, amount),
        }
    }

    /// Shuffled within the window and partly replayed, the state equals the sorted fold.
    #[test]
    fn out_of_order_and_replayed_events_fold_as_the_sorted_history() {
        let events: Vec<Event> = (0..200)
            .map(|i| {
                ev(
                    &format!("e{i}"),
                    i * 2,
                    10.0 + i as f64 - if i % 17 == 0 { 40.0 } else { 0.0 },
                )
            })
            .collect();
        let mut sorted = events.clone();
        sorted.sort_by_key(|e| (e.tx.ts, event_key(&e.event_id)));
        let reference =
            CustomerSummary::from_transactions(&sorted.iter().map(|e| e.tx).collect::<Vec<_>>())
                .unwrap();
        let lateness = 10 * DAY;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        // Shuffle inside blocks shorter than the window, replaying one in twenty at once
        // (a duplicate) and every one of them again at the end (long settled: late).
        let mut arrival: Vec<&Event> = Vec::new();
        for (k, chunk) in events.chunks(4).enumerate() {
            let mut c: Vec<&Event> = chunk.iter().collect();
            c.shuffle(&mut rng);
            arrival.extend(c);
            if k % 5 == 0 {
                arrival.push(&chunk[1]);
            }
        }
        arrival.extend(events.iter().step_by(20));
        let mut state = CustomerState::default();
        let out = apply_all(&mut state, &arrival, lateness).unwrap();
        let count = |o: Outcome| out.iter().filter(|x| **x == o).count();
        assert_eq!(count(Outcome::Applied), 200);
        assert_eq!(count(Outcome::Duplicate) + count(Outcome::Late), 20);
        assert!(count(Outcome::Duplicate) >= 10, "{out:?}");
        assert_eq!(state.summary().unwrap(), reference);
        // Round trip through the stored form.
        assert_eq!(decode(&encode(&state).unwrap()).unwrap(), state);
    }

    #[test]
    fn an_event_older_than_the_window_is_late_and_changes_nothing() {
        let mut s = CustomerState::default();
        assert_eq!(
            s.apply(&ev("a", 100, 5.0), 3 * DAY).unwrap(),
            Outcome::Applied
        );
        let before = s.clone();
        assert_eq!(s.apply(&ev("b", 90, 5.0), 3 * DAY).unwrap(), Outcome::Late);
        assert_eq!(s, before);
        assert_eq!(
            s.apply(&ev("c", 98, 5.0), 3 * DAY).unwrap(),
            Outcome::Applied
        );
        assert!(s.apply(&ev("d", 99, f64::NAN), 3 * DAY).is_err());
    }

    #[test]
    fn another_schema_is_refused() {
        let mut bytes = encode(&CustomerState::default()).unwrap();
        bytes[4] = bytes[4].wrapping_add(1);
        assert!(matches!(decode(&bytes), Err(StateError::Schema { .. })));
        assert!(matches!(decode(b"nope"), Err(StateError::Corrupt(_))));
    }
}

//! The embedded store: customer state on local disk, for one server (the default: nothing to
//! install). Two parts, as in most databases built for write rates:
//!
//! - a [`journal`] of accepted changes, appended and synced before a batch is acknowledged,
//!   and an in-memory map of the customers changed since the last checkpoint;
//! - a redb file (`customers` table: salted id hash → encoded state) that a checkpoint, every
//!   few seconds in the background, brings up to date, deleting the journal it covers.
//!
//! A read looks in the map, then in the table. One writer at a time applies a batch (the
//! journal's order is the order changes took effect), so two requests for one customer can
//! never lose a purchase. Opening the store replays the journal after the last checkpoint:
//! a crash, even SIGKILL between an acknowledgement and the next checkpoint, loses nothing
//! acknowledged.

mod journal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use self::journal::{Journal, Keyed, Record};
use super::{
    by_customer, customer_digest, customer_key, decode, encode, event_key, CustomerState,
    CustomerStore, Erasure, Event, Outcome, StateError,
};

const CUSTOMERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("customers");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const ERASURES: TableDefinition<u64, &str> = TableDefinition::new("erasures");
/// Salted id hash → the segment last published for the customer (segment-change events).
/// Written straight to the table, not journaled: a mark is set once per change, far less
/// often than purchases arrive.
const MARKS: TableDefinition<&[u8], &str> = TableDefinition::new("marks");
/// Meta key: the last journal segment the table holds the changes of.
const THROUGH: &str = "journal_through";

/// A checkpoint starts this often while there are changes...
const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);
/// ...or sooner, once this many customers changed or the segment grew this large; memory
/// and replay time stay bounded whatever the write rate.
const DIRTY_LIMIT: usize = 200_000;
const SEGMENT_LIMIT: u64 = 64 << 20;
/// redb's page cache (its default is 1 GiB). Reads that miss it still hit the OS's cache.
const CACHE_BYTES: usize = 128 << 20;

pub(super) fn err(e: impl std::fmt::Display) -> StateError {
    StateError::Embedded(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type Digest = [u8; 32];
/// A customer changed since the checkpoint: their state, or `None` once erased.
type Changed = Option<Arc<CustomerState>>;

struct Cut {
    through: u64,
    snapshot: Vec<(Digest, Changed)>,
}

struct Inner {
    db: Database,
    salt: String,
    /// The one writer; holds the journal, so appends are in the order changes took effect.
    writer: Mutex<Journal>,
    journal_dir: PathBuf,
    dirty: RwLock<HashMap<Digest, Changed>>,
    /// One checkpoint at a time.
    checkpointing: Mutex<()>,
    wake: Condvar,
    stop: Mutex<bool>,
}

pub struct EmbeddedStore {
    inner: Arc<Inner>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedStore {
    /// Opens (or creates) the file, its folder and its journal (`<file>.journal/`), and
    /// replays the journal. A file another process holds open is a clear error: one process
    /// at a time owns an embedded store.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let open_err = |reason: String| StateError::Open {
            path: path.display().to_string(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| {
                match e {
            redb::DatabaseError::DatabaseAlreadyOpen => open_err(
                "in use by another process (a running server?); stop it, or use the server's RPCs"
                    .into(),
            ),
            other => open_err(other.to_string()),
        }
            })?;
        let (salt, through) = prepare(&db)?;
        let mut dirty = HashMap::new();
        let journal_dir = journal_dir(path);
        let journal = Journal::open(&journal_dir, through, |record| {
            replay(&db, &mut dirty, record)
        })
        .map_err(|e| open_err(e.to_string()))?;
        let inner = Arc::new(Inner {
            db,
            salt,
            writer: Mutex::new(journal),
            journal_dir,
            dirty: RwLock::new(dirty),
            checkpointing: Mutex::new(()),
            wake: Condvar::new(),
            stop: Mutex::new(false),
        });
        let worker = inner.clone();
        let checkpointer = std::thread::Builder::new()
            .name("state-checkpoint".into())
            .spawn(move || worker.checkpoint_loop())
            .map_err(|e| open_err(e.to_string()))?;
        Ok(EmbeddedStore {
            inner,
            checkpointer: Some(checkpointer),
        })
    }

    /// Runs blocking work (journal syncs, checkpoints) off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(err)?
    }
}

impl Drop for EmbeddedStore {
    /// Stops the checkpointer and waits for it, so the file is free once the store is gone.
    fn drop(&mut self) {
        *lock(&self.inner.stop) = true;
        self.inner.wake.notify_all();
        if let Some(t) = self.checkpointer.take() {
            let _ = t.join();
        }
    }
}

fn journal_dir(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

/// Creates the tables on first use; the erasure salt (random, once per store) and the last
/// journal segment checkpointed.
fn prepare(db: &Database) -> Result<(String, u64), StateError> {
    let txn = db.begin_write().map_err(err)?;
    let found = {
        let mut meta = txn.open_table(META).map_err(err)?;
        let salt = meta
            .get("erasure_salt")
            .map_err(err)?
            .map(|v| v.value().to_string());
        let salt = match salt {
            Some(s) => s,
            None => {
                let s = hex::encode(rand::random::<[u8; 16]>());
                meta.insert("erasure_salt", s.as_str()).map_err(err)?;
                s
            }
        };
        let through = match meta.get(THROUGH).map_err(err)? {
            Some(v) => v
                .value()
                .parse()
                .map_err(|_| StateError::Corrupt(format!("{THROUGH} is {}", v.value())))?,
            None => 0,
        };
        (salt, through)
    };
    txn.open_table(CUSTOMERS).map_err(err)?;
    txn.open_table(ERASURES).map_err(err)?;
    txn.open_table(MARKS).map_err(err)?;
    txn.commit().map_err(err)?;
    Ok(found)
}

fn read_row(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &Digest,
) -> Result<Option<CustomerState>, StateError> {
    match table.get(key.as_slice()).map_err(err)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

fn read_table(db: &Database, key: &Digest) -> Result<Option<CustomerState>, StateError> {
    let txn = db.begin_read().map_err(err)?;
    read_row(&txn.open_table(CUSTOMERS).map_err(err)?, key)
}

/// A customer's current state: the change since the checkpoint, else the table's. The
/// caller holds `dirty` locked across both looks, so a checkpoint cannot drop the change
/// in between.
fn current(
    db: &Database,
    dirty: &HashMap<Digest, Changed>,
    key: &Digest,
) -> Result<Option<CustomerState>, StateError> {
    match dirty.get(key) {
        Some(changed) => Ok(changed.as_deref().cloned()),
        None => read_table(db, key),
    }
}

/// Replays one journal record at open, exactly as it was applied.
fn replay(
    db: &Database,
    dirty: &mut HashMap<Digest, Changed>,
    record: Record,
) -> Result<(), StateError> {
    match record {
        Record::Applied { lateness, events } => {
            for e in events {
                let mut state = current(db, dirty, &e.customer)?.unwrap_or_default();
                state.apply_keyed(e.key, &e.tx, lateness)?;
                dirty.insert(e.customer, Some(Arc::new(state)));
            }
        }
        Record::Forgotten { customer } => {
            dirty.insert(customer, None);
        }
    }
    Ok(())
}

impl Inner {
    fn digest(&self, customer_id: &str) -> Digest {
        customer_digest(&self.salt, customer_id)
    }

    fn dirty(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Digest, Changed>> {
        self.dirty.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn dirty_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Digest, Changed>> {
        self.dirty.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: &Digest) -> Result<Option<CustomerState>, StateError> {
        current(&self.db, &self.dirty(), key)
    }

    /// Applies a batch: every customer's events folded into their state, the applied ones
    /// journaled (synced) in one append, and only then made visible.
    fn apply(&self, events: &[Event], lateness: i64) -> Result<Vec<Outcome>, StateError> {
        let mut journal = lock(&self.writer);
        let (outcomes, changed, applied) = self.fold(events, lateness)?;
        if !applied.is_empty() {
            journal.append(&Record::Applied {
                lateness,
                events: applied,
            })?;
            let mut dirty = self.dirty_mut();
            for (customer, state) in changed {
                dirty.insert(customer, Some(Arc::new(state)));
            }
        }
        let dirty = self.dirty().len();
        if dirty >= DIRTY_LIMIT || journal.bytes() >= SEGMENT_LIMIT {
            self.wake.notify_all();
        }
        drop(journal);
        if dirty >= 3 * DIRTY_LIMIT {
            // Writes outrun the checkpoints: wait for one rather than grow without bound.
            self.checkpoint(|_| Ok(()))?;
        }
        Ok(outcomes)
    }

    /// Folds a batch into its customers' states, without storing anything: the outcomes,
    /// the states that changed and the events that applied. Called with the writer held, so
    /// no checkpoint drops a change while the batch's one read transaction is open.
    #[allow(clippy::type_complexity)]
    fn fold(
        &self,
        events: &[Event],
        lateness: i64,
    ) -> Result<(Vec<Outcome>, Vec<(Digest, CustomerState)>, Vec<Keyed>), StateError> {
        let mut outcomes = vec![Outcome::Rejected; events.len()];
        let (mut changed, mut applied) = (Vec::new(), Vec::new());
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(CUSTOMERS).map_err(err)?;
        let dirty = self.dirty();
        for (id, group) in by_customer(events) {
            let customer = self.digest(id);
            let mut state = match dirty.get(&customer) {
                Some(changed) => changed.as_deref().cloned(),
                None => read_row(&table, &customer)?,
            }
            .unwrap_or_default();
            let before = applied.len();
            for (i, e) in group {
                let key = event_key(&e.event_id);
                outcomes[i] = state.apply_keyed(key, &e.tx, lateness)?;
                if outcomes[i] == Outcome::Applied {
                    applied.push(Keyed {
                        customer,
                        key,
                        tx: e.tx,
                    });
                }
            }
            if applied.len() > before {
                changed.push((customer, state));
            }
        }
        Ok((outcomes, changed, applied))
    }

    /// Brings the table up to date with the journal, runs `also` in the same transaction,
    /// and deletes the journal segments the table now holds.
    fn checkpoint<T>(
        &self,
        also: impl FnOnce(&WriteTransaction) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let _one = lock(&self.checkpointing);
        let cut = self.cut(&mut lock(&self.writer))?;
        let out = self.write(&cut, also)?;
        self.settle(&mut lock(&self.writer), cut)?;
        Ok(out)
    }

    /// What a checkpoint takes: the journal segments so far (a new one starts) and the
    /// changes they made, in key order (a B-tree takes sorted inserts page by page).
    fn cut(&self, journal: &mut Journal) -> Result<Cut, StateError> {
        let through = journal.rotate()?;
        let mut snapshot: Vec<(Digest, Changed)> =
            self.dirty().iter().map(|(k, v)| (*k, v.clone())).collect();
        snapshot.sort_unstable_by_key(|e| e.0);
        Ok(Cut { through, snapshot })
    }

    /// Writes a cut to the table, and `also`, in one transaction.
    fn write<T>(
        &self,
        cut: &Cut,
        also: impl FnOnce(&WriteTransaction) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(CUSTOMERS).map_err(err)?;
            for (key, changed) in &cut.snapshot {
                match changed {
                    Some(state) => {
                        table
                            .insert(key.as_slice(), encode(state)?.as_slice())
                            .map_err(err)?;
                    }
                    None => {
                        table.remove(key.as_slice()).map_err(err)?;
                    }
                }
            }
            let mut meta = txn.open_table(META).map_err(err)?;
            meta.insert(THROUGH, cut.through.to_string().as_str())
                .map_err(err)?;
        }
        let out = also(&txn)?;
        txn.commit().map_err(err)?;
        Ok(out)
    }

    /// After a cut is written: drops the changes the table now holds and the journal that
    /// held them. Takes the writer (`_writer`), so no batch is folding meanwhile.
    fn settle(&self, _writer: &mut Journal, cut: Cut) -> Result<(), StateError> {
        self.forget_checkpointed(&cut.snapshot);
        journal::remove_through(&self.journal_dir, cut.through)
    }

    /// Drops the changes the table now holds, keeping those made since the snapshot.
    fn forget_checkpointed(&self, snapshot: &[(Digest, Changed)]) {
        let mut dirty = self.dirty_mut();
        for (key, taken) in snapshot {
            let unchanged = match (dirty.get(key), taken) {
                (Some(Some(now)), Some(then)) => Arc::ptr_eq(now, then),
                (Some(None), None) => true,
                _ => false,
            };
            if unchanged {
                dirty.remove(key);
            }
        }
    }

    fn has_changes(&self) -> bool {
        !self.dirty().is_empty() || !lock(&self.writer).is_empty()
    }

    fn checkpoint_loop(&self) {
        let mut stop = lock(&self.stop);
        while !*stop {
            stop = self
                .wake
                .wait_timeout(stop, CHECKPOINT_EVERY)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if *stop || !self.has_changes() {
                continue;
            }
            drop(stop);
            let started = std::time::Instant::now();
            match self.checkpoint(|_| Ok(())) {
                Ok(()) => tracing::debug!(took = ?started.elapsed(), "state checkpoint"),
                // The journal still holds everything; the next round tries again.
                Err(e) => tracing::warn!(error = %e, "state checkpoint failed"),
            }
            stop = lock(&self.stop);
        }
    }

    /// Erases a customer: a journaled tombstone (so a replay cannot bring them back), then a
    /// checkpoint that removes their row, deletes the journal that held their events and
    /// records the erasure, in one transaction.
    fn forget(
        &self,
        customer_id: &str,
        actor: String,
        reason: String,
    ) -> Result<Erasure, StateError> {
        let customer = self.digest(customer_id);
        let found = {
            let mut journal = lock(&self.writer);
            let found = self.get(&customer)?.is_some();
            journal.append(&Record::Forgotten { customer })?;
            self.dirty_mut().insert(customer, None);
            found
        };
        let erasure = Erasure {
            customer: customer_key(&self.salt, customer_id),
            at: crate::time::fmt_ts(chrono::Utc::now().timestamp()),
            actor,
            reason,
            found,
        };
        self.checkpoint(|txn| {
            txn.open_table(MARKS)
                .map_err(err)?
                .remove(customer.as_slice())
                .map_err(err)?;
            let mut log = txn.open_table(ERASURES).map_err(err)?;
            let next = log.last().map_err(err)?.map_or(0, |(k, _)| k.value() + 1);
            let json = serde_json::to_string(&erasure).map_err(err)?;
            log.insert(next, json.as_str()).map_err(err)?;
            Ok(())
        })?;
        Ok(erasure)
    }

    /// [`CustomerStore::set_marks`] in one transaction: redb has one writer at a time, so
    /// each read-and-replace is atomic.
    fn set_marks(
        &self,
        marks: &[(String, String)],
    ) -> Result<Vec<Option<Option<String>>>, StateError> {
        let txn = self.db.begin_write().map_err(err)?;
        let mut out = Vec::with_capacity(marks.len());
        {
            let mut table = txn.open_table(MARKS).map_err(err)?;
            for (id, to) in marks {
                let key = self.digest(id);
                let before = table
                    .get(key.as_slice())
                    .map_err(err)?
                    .map(|v| v.value().to_string());
                if before.as_deref() == Some(to.as_str()) {
                    out.push(None);
                } else {
                    table.insert(key.as_slice(), to.as_str()).map_err(err)?;
                    out.push(Some(before));
                }
            }
        }
        if out.iter().any(Option::is_some) {
            txn.commit().map_err(err)?;
        } else {
            txn.abort().map_err(err)?;
        }
        Ok(out)
    }

    /// Replaces whole states (the bulk load): a checkpoint first, so that no journaled event
    /// replays on top of a state loaded after it; the writer held throughout.
    fn put_all(&self, states: &[(String, CustomerState)]) -> Result<(), StateError> {
        let _one = lock(&self.checkpointing);
        let mut journal = lock(&self.writer);
        let cut = self.cut(&mut journal)?;
        self.write(&cut, |txn| {
            let mut table = txn.open_table(CUSTOMERS).map_err(err)?;
            for (id, state) in states {
                table
                    .insert(self.digest(id).as_slice(), encode(state)?.as_slice())
                    .map_err(err)?;
            }
            Ok(())
        })?;
        self.settle(&mut journal, cut)?;
        let mut dirty = self.dirty_mut();
        for (id, _) in states {
            dirty.remove(&self.digest(id));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl CustomerStore for EmbeddedStore {
    async fn apply(&self, events: &[Event], lateness: i64) -> Result<Vec<Outcome>, StateError> {
        let events = events.to_vec();
        self.blocking(move |inner| inner.apply(&events, lateness))
            .await
    }

    // Reads run on the calling thread: a map lookup or a read of pages the OS caches takes
    // microseconds, and a hop to the blocking pool would cost more than the read.
    async fn get(&self, customer_id: &str) -> Result<Option<CustomerState>, StateError> {
        self.inner.get(&self.inner.digest(customer_id))
    }

    async fn get_many(&self, ids: &[&str]) -> Result<Vec<Option<CustomerState>>, StateError> {
        ids.iter()
            .map(|id| self.inner.get(&self.inner.digest(id)))
            .collect()
    }

    async fn put_all(&self, states: Vec<(String, CustomerState)>) -> Result<(), StateError> {
        self.blocking(move |inner| inner.put_all(&states)).await
    }

    async fn forget(
        &self,
        customer_id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<Erasure, StateError> {
        let (id, actor, reason) = (
            customer_id.to_string(),
            actor.to_string(),
            reason.to_string(),
        );
        self.blocking(move |inner| inner.forget(&id, actor, reason))
            .await
    }

    async fn set_marks(
        &self,
        marks: &[(&str, &str)],
    ) -> Result<Vec<Option<Option<String>>>, StateError> {
        let marks: Vec<(String, String)> = marks
            .iter()
            .map(|(id, to)| (id.to_string(), to.to_string()))
            .collect();
        self.blocking(move |inner| inner.set_marks(&marks)).await
    }

    async fn erasures(&self) -> Result<Vec<Erasure>, StateError> {
        self.blocking(move |inner| {
            let txn = inner.db.begin_read().map_err(err)?;
            let log = txn.open_table(ERASURES).map_err(err)?;
            let mut out = Vec::new();
            for row in log.iter().map_err(err)? {
                let (_, v) = row.map_err(err)?;
                out.push(serde_json::from_str(v.value()).map_err(err)?);
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{Transaction, DAY};

    fn ev(customer: &str, id: &str, day: i64) -> Event {
        Event {
            customer_id: customer.into(),
            event_id: id.into(),
            tx: Transaction::new(20_000 * DAY + day * DAY, 10.0 + day as f64),
        }
    }

    fn journal_bytes(path: &Path) -> Vec<u8> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(journal_dir(path)).unwrap() {
            all.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        all
    }

    /// The stored states of customers c0, c1 and c2.
    fn states(store: &EmbeddedStore) -> Vec<Option<CustomerState>> {
        (0..3)
            .map(|c| {
                store
                    .inner
                    .get(&store.inner.digest(&format!("c{c}")))
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn acknowledged_events_survive_a_reopen_with_and_without_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = EmbeddedStore::open(&path).unwrap();
        let batch: Vec<Event> = (0..20)
            .map(|d| ev(&format!("c{}", d % 3), &format!("e{d}"), d))
            .collect();
        store.inner.apply(&batch[..10], 5 * DAY).unwrap();
        store.inner.checkpoint(|_| Ok(())).unwrap();
        store.inner.apply(&batch[10..], 5 * DAY).unwrap();
        let want = states(&store);
        assert!(want.iter().all(Option::is_some));
        drop(store);
        // Reopened with only the journal after the checkpoint to replay, then again after a
        // checkpoint of everything: the same states both times.
        let store = EmbeddedStore::open(&path).unwrap();
        let got = states(&store);
        assert_eq!(got, want);
        store.inner.checkpoint(|_| Ok(())).unwrap();
        assert!(store.inner.dirty().is_empty());
        drop(store);
        let store = EmbeddedStore::open(&path).unwrap();
        let got = states(&store);
        assert_eq!(got, want);
        // A replayed batch changes nothing: every event is a duplicate.
        let again = store.inner.apply(&batch, 5 * DAY).unwrap();
        assert!(again.iter().all(|o| *o == Outcome::Duplicate), "{again:?}");
    }

    #[test]
    fn forget_leaves_nothing_of_the_customer_in_the_journal_or_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = EmbeddedStore::open(&path).unwrap();
        store
            .inner
            .apply(&[ev("gone", "a", 1), ev("kept", "b", 1)], DAY)
            .unwrap();
        let gone = store.inner.digest("gone");
        let in_journal = |bytes: &[u8]| bytes.windows(32).any(|w| w == gone);
        assert!(in_journal(&journal_bytes(&path)));
        let erasure = store
            .inner
            .forget("gone", "test".into(), "asked".into())
            .unwrap();
        assert!(erasure.found);
        assert!(
            !in_journal(&journal_bytes(&path)),
            "the journal still holds the erased customer"
        );
        drop(store);
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.inner.get(&gone).unwrap(), None);
        assert!(store
            .inner
            .get(&store.inner.digest("kept"))
            .unwrap()
            .is_some());
        // New events after the erasure start a new state, and replay as such.
        store.inner.apply(&[ev("gone", "c", 2)], DAY).unwrap();
        drop(store);
        let store = EmbeddedStore::open(&path).unwrap();
        let back = store.inner.get(&gone).unwrap().unwrap();
        assert_eq!(back.summary().unwrap().purchases(), 1);
    }

    #[test]
    fn a_bulk_load_replaces_what_the_journal_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = EmbeddedStore::open(&path).unwrap();
        store
            .inner
            .apply(&[ev("c", "a", 1), ev("c", "b", 2)], DAY)
            .unwrap();
        let mut loaded = CustomerState::default();
        loaded.apply(&ev("c", "z", 9), DAY).unwrap();
        store
            .inner
            .put_all(&[("c".into(), loaded.clone())])
            .unwrap();
        drop(store);
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(
            store.inner.get(&store.inner.digest("c")).unwrap(),
            Some(loaded)
        );
    }
}

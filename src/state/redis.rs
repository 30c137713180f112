//! The Redis store: customer state shared by every replica. Each customer is a hash
//! `loyalscore:c:<salted hash of the id>` with a version `v` and the encoded state `s`; a write is a
//! compare-and-swap (a Lua script sets the new state only if `v` is still the version read),
//! so two replicas updating one customer at once never lose a purchase: the loser reads again
//! and re-applies. A batch costs two round trips (all reads pipelined, all swaps pipelined)
//! plus a retry for the customers another writer touched in between. A third field, `m`, holds
//! the segment last published for the customer (`set_marks`), so an erasure's DEL takes it.

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::{
    apply_all, by_customer, customer_key, decode, encode, CustomerState, CustomerStore, Erasure,
    Event, Outcome, StateError,
};

/// Sets `s` and bumps `v` only if `v` is what the writer read (`0`: the key must not exist).
const CAS: &str = r"
local v = redis.call('HGET', KEYS[1], 'v')
if (v == false and ARGV[1] == '0') or v == ARGV[1] then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3])
  return 1
end
return 0
";

/// Replaces the customer's mark (field `m`, beside the state, so an erasure's DEL takes it
/// too) unless it already is ARGV[1]; returns the mark replaced ('' for none), or false.
const SET_MARK: &str = r"
local m = redis.call('HGET', KEYS[1], 'm')
if m == ARGV[1] then
  return false
end
redis.call('HSET', KEYS[1], 'm', ARGV[1])
if m == false then
  return ''
end
return m
";

/// Rounds of re-reading after lost swaps before a batch gives up (`StateError::Contended`).
const MAX_ROUNDS: usize = 32;

fn err(e: impl std::fmt::Display) -> StateError {
    StateError::Redis(e.to_string())
}

const ERASURES: &str = "loyalscore:erasures";
const SALT: &str = "loyalscore:meta:erasure_salt";

pub struct RedisStore {
    con: ConnectionManager,
    cas: redis::Script,
    set_mark: redis::Script,
    salt: String,
}

impl RedisStore {
    /// A customer's hash, by the salted hash of their id.
    fn key(&self, id: &str) -> String {
        format!("loyalscore:c:{}", customer_key(&self.salt, id))
    }

    pub async fn connect(url: &str) -> Result<Self, StateError> {
        let open_err = |reason: String| StateError::Open {
            path: url.to_string(),
            reason,
        };
        let client = redis::Client::open(url).map_err(|e| open_err(e.to_string()))?;
        let mut con = ConnectionManager::new(client)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        let cas = redis::Script::new(CAS);
        cas.prepare_invoke()
            .load_async(&mut con)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        // The first replica sets the salt; every other one reads it.
        let fresh = hex::encode(rand::random::<[u8; 16]>());
        let _: bool = con.set_nx(SALT, &fresh).await.map_err(err)?;
        let salt: String = con.get(SALT).await.map_err(err)?;
        Ok(RedisStore {
            con,
            cas,
            set_mark: redis::Script::new(SET_MARK),
            salt,
        })
    }

    /// Reads the version and state of each customer, pipelined.
    async fn read_all(
        &self,
        ids: &[&str],
    ) -> Result<Vec<(u64, Option<CustomerState>)>, StateError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET").arg(self.key(id)).arg("v").arg("s");
        }
        let mut con = self.con.clone();
        let raw: Vec<(Option<u64>, Option<Vec<u8>>)> =
            pipe.query_async(&mut con).await.map_err(err)?;
        raw.into_iter()
            .map(|(v, s)| Ok((v.unwrap_or(0), s.map(|b| decode(&b)).transpose()?)))
            .collect()
    }

    /// Compare-and-swap of each (id, version read, new state), pipelined; which succeeded.
    async fn swap_all(&self, writes: &[(&str, u64, Vec<u8>)]) -> Result<Vec<bool>, StateError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        for attempt in 0..2 {
            let mut pipe = redis::pipe();
            for (id, v, bytes) in writes {
                let mut inv = self.cas.prepare_invoke();
                inv.key(self.key(id))
                    .arg(*v)
                    .arg(v + 1)
                    .arg(bytes.as_slice());
                pipe.invoke_script(&inv);
            }
            let mut con = self.con.clone();
            match pipe.query_async::<Vec<i64>>(&mut con).await {
                Ok(r) => return Ok(r.into_iter().map(|x| x == 1).collect()),
                // A restarted Redis has forgotten the script: load it again, once.
                Err(e)
                    if attempt == 0
                        && e.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    self.cas
                        .prepare_invoke()
                        .load_async(&mut con)
                        .await
                        .map_err(err)?;
                }
                Err(e) => return Err(err(e)),
            }
        }
        Err(StateError::Redis(
            "the compare-and-swap script cannot be loaded".into(),
        ))
    }
}

#[async_trait::async_trait]
impl CustomerStore for RedisStore {
    async fn apply(&self, events: &[Event], lateness: i64) -> Result<Vec<Outcome>, StateError> {
        let mut outcomes = vec![Outcome::Rejected; events.len()];
        let mut todo = by_customer(events);
        for _ in 0..MAX_ROUNDS {
            if todo.is_empty() {
                return Ok(outcomes);
            }
            let ids: Vec<&str> = todo.iter().map(|(id, _)| *id).collect();
            let read = self.read_all(&ids).await?;
            let mut writes = Vec::new();
            let mut pending_groups = Vec::new();
            for ((id, group), (version, state)) in todo.into_iter().zip(read) {
                let mut state = state.unwrap_or_default();
                let evs: Vec<&Event> = group.iter().map(|(_, e)| *e).collect();
                let out = apply_all(&mut state, &evs, lateness)?;
                for ((i, _), o) in group.iter().zip(&out) {
                    outcomes[*i] = *o;
                }
                // Duplicates and late events judged on a stale read stay so on a fresher one.
                if out.contains(&Outcome::Applied) {
                    writes.push((id, version, encode(&state)?));
                    pending_groups.push((id, group));
                }
            }
            let swapped = self.swap_all(&writes).await?;
            todo = pending_groups
                .into_iter()
                .zip(swapped)
                .filter(|(_, ok)| !ok)
                .map(|(g, _)| g)
                .collect();
        }
        Err(StateError::Contended(format!(
            "{} customers were changed by other writers {MAX_ROUNDS} times in a row",
            todo.len()
        )))
    }

    async fn get(&self, customer_id: &str) -> Result<Option<CustomerState>, StateError> {
        let mut con = self.con.clone();
        let bytes: Option<Vec<u8>> = con.hget(self.key(customer_id), "s").await.map_err(err)?;
        bytes.map(|b| decode(&b)).transpose()
    }

    async fn get_many(&self, ids: &[&str]) -> Result<Vec<Option<CustomerState>>, StateError> {
        Ok(self
            .read_all(ids)
            .await?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    async fn put_all(&self, states: Vec<(String, CustomerState)>) -> Result<(), StateError> {
        for chunk in states.chunks(1000) {
            let mut pipe = redis::pipe();
            for (id, state) in chunk {
                // A bulk load replaces the state; the version moves on so that a writer that
                // read before the load loses its swap.
                pipe.cmd("HINCRBY")
                    .arg(self.key(id))
                    .arg("v")
                    .arg(1)
                    .ignore();
                pipe.cmd("HSET")
                    .arg(self.key(id))
                    .arg("s")
                    .arg(encode(state)?)
                    .ignore();
            }
            let mut con = self.con.clone();
            let _: () = pipe.query_async(&mut con).await.map_err(err)?;
        }
        Ok(())
    }

    async fn forget(
        &self,
        customer_id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<Erasure, StateError> {
        let mut con = self.con.clone();
        let removed: i64 = con.del(self.key(customer_id)).await.map_err(err)?;
        let erasure = Erasure {
            customer: customer_key(&self.salt, customer_id),
            at: crate::time::fmt_ts(chrono::Utc::now().timestamp()),
            actor: actor.to_string(),
            reason: reason.to_string(),
            found: removed > 0,
        };
        let json = serde_json::to_string(&erasure).map_err(err)?;
        let _: i64 = con.rpush(ERASURES, json).await.map_err(err)?;
        Ok(erasure)
    }

    async fn set_marks(
        &self,
        marks: &[(&str, &str)],
    ) -> Result<Vec<Option<Option<String>>>, StateError> {
        let mut out = Vec::with_capacity(marks.len());
        for chunk in marks.chunks(1000) {
            let mut pipe = redis::pipe();
            for (id, to) in chunk {
                let mut inv = self.set_mark.prepare_invoke();
                inv.key(self.key(id)).arg(*to);
                pipe.invoke_script(&inv);
            }
            let mut con = self.con.clone();
            let replaced: Vec<Option<String>> = match pipe.query_async(&mut con).await {
                Ok(r) => r,
                // The script is loaded on first use (EVALSHA, then EVAL on NOSCRIPT) only
                // outside pipelines: load it and try once more.
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    self.set_mark
                        .prepare_invoke()
                        .load_async(&mut con)
                        .await
                        .map_err(err)?;
                    pipe.query_async(&mut con).await.map_err(err)?
                }
                Err(e) => return Err(err(e)),
            };
            out.extend(
                replaced
                    .into_iter()
                    .map(|m| m.map(|m| Some(m).filter(|m| !m.is_empty()))),
            );
        }
        Ok(out)
    }

    async fn erasures(&self) -> Result<Vec<Erasure>, StateError> {
        let mut con = self.con.clone();
        let rows: Vec<String> = con.lrange(ERASURES, 0, -1).await.map_err(err)?;
        rows.iter()
            .map(|r| serde_json::from_str(r).map_err(err))
            .collect()
    }
}

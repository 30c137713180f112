//! Aliases (`production`, `staging`, any name): moved only by compare-and-swap, with every
//! move kept as the audit history.
//!
//! Each move is a new record `aliases/<name>/<seq>.json` in a [journal](super::journal); the
//! highest sequence number is the alias's current value.

use serde::{Deserialize, Serialize};

use super::{check_version_id, Registry, RegistryError};

/// One move of an alias: its current value when it is the latest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub alias: String,
    pub seq: u64,
    pub version: String,
    /// The version the alias pointed at before this move.
    pub previous: Option<String>,
    /// `set`, `rollback` or `repair` (superseding corrupt records).
    pub action: String,
    pub actor: String,
    pub at: String,
    pub reason: String,
}

/// A record of an alias's journal that does not read as one (say, a half-written or hand-edited
/// file). It is skipped, never served, and kept: history is never rewritten.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorruptRecord {
    pub seq: u64,
    pub reason: String,
}

/// An alias as read: its latest readable move, and the corrupt records written after it
/// (oldest first). Empty `corrupt` is the normal case.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AliasState {
    pub current: Option<AliasRecord>,
    pub corrupt: Vec<CorruptRecord>,
    /// The number the next move takes: one past every record, corrupt ones included.
    pub next_seq: u64,
}

/// Every record of an alias, oldest first: the readable moves and the corrupt ones apart.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AliasJournal {
    pub records: Vec<AliasRecord>,
    pub corrupt: Vec<CorruptRecord>,
}

/// What the caller believes the alias points at now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Whatever it is (no check; the move is still atomic against concurrent movers).
    Any,
    /// The alias must not exist yet.
    Absent,
    /// The alias must point at this version.
    Version(String),
}

impl Expect {
    /// `none` means absent; anything else is a version id.
    pub fn parse(s: &str) -> Self {
        if s.eq_ignore_ascii_case("none") {
            Expect::Absent
        } else {
            Expect::Version(s.to_string())
        }
    }
}

/// Who moves an alias (or changes traffic) and why.
#[derive(Debug, Clone)]
pub struct Move {
    pub actor: String,
    pub reason: String,
}

impl Move {
    /// Every change records why: a set or a traffic change without a reason is refused.
    pub(super) fn check_reason(&self) -> Result<(), RegistryError> {
        if self.reason.trim().is_empty() {
            Err(RegistryError::ReasonRequired)
        } else {
            Ok(())
        }
    }

    /// A rollback's reason may be left out: the record then says "rollback".
    fn or_rollback(&self) -> Move {
        let mut m = self.clone();
        if m.reason.trim().is_empty() {
            m.reason = "rollback".into();
        }
        m
    }
}

/// Why an alias has nothing a server could serve: what its warnings say.
#[derive(Debug, Clone, PartialEq)]
pub enum Unserved {
    NoSuchPath(String),
    NoVersions,
    NoSuchAlias {
        existing: Vec<String>,
    },
    /// The alias names a version; why that cannot serve is logged where it was loaded.
    Points {
        version: String,
    },
    Unreadable(String),
}

impl std::fmt::Display for Unserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unserved::NoSuchPath(p) => write!(f, "the registry folder {p} does not exist"),
            Unserved::NoVersions => write!(
                f,
                "the registry holds no versions yet (loyalscore-train fit publishes one)"
            ),
            Unserved::NoSuchAlias { existing } if existing.is_empty() => {
                write!(
                    f,
                    "the alias was never set, and no alias exists (loyalscore alias set)"
                )
            }
            Unserved::NoSuchAlias { existing } => {
                write!(
                    f,
                    "no such alias; the aliases that exist are {}",
                    existing.join(", ")
                )
            }
            Unserved::Points { version } => {
                write!(f, "the alias points at {version}, which failed to load (see the error logged when it was tried)")
            }
            Unserved::Unreadable(e) => write!(f, "the registry cannot be read: {e}"),
        }
    }
}

/// Where a rollback goes: the history replayed as a stack of deployments, where a set pushes
/// its version and a rollback pops the version it left; the target is the one under the top.
fn rollback_target(history: &[AliasRecord]) -> Option<String> {
    let mut stack: Vec<&str> = Vec::new();
    for r in history {
        if r.action == "rollback" {
            stack.pop();
            // Records written when rollback toggled may land elsewhere: follow them.
            if stack.last() != Some(&r.version.as_str()) {
                stack.push(&r.version);
            }
        } else if r.action == "repair" && stack.last() == Some(&r.version.as_str()) {
            // A repair back to where the alias was is no new deployment.
        } else {
            stack.push(&r.version);
        }
    }
    let n = stack.len();
    (n >= 2).then(|| stack[n - 2].to_string())
}

/// Alias names become path segments, like version ids.
pub(super) fn check_alias(name: &str) -> Result<(), RegistryError> {
    check_version_id(name).map_err(|_| RegistryError::BadAliasName(name.to_string()))
}

impl Registry {
    async fn alias_seqs(&self, name: &str) -> Result<Vec<u64>, RegistryError> {
        self.journal_seqs(&["aliases", name]).await
    }

    async fn alias_record(&self, name: &str, seq: u64) -> Result<AliasRecord, RegistryError> {
        let bytes = self.journal_read(&["aliases", name], seq).await?;
        let r: AliasRecord =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::CorruptAlias {
                alias: name.to_string(),
                seq,
                reason: e.to_string(),
            })?;
        if r.seq != seq || r.alias != name {
            return Err(RegistryError::CorruptAlias {
                alias: name.to_string(),
                seq,
                reason: format!("record says alias {} seq {}", r.alias, r.seq),
            });
        }
        Ok(r)
    }

    /// Why `alias` gives a server nothing to serve, looked at from the registry's side.
    pub async fn unserved(&self, alias: &str) -> Unserved {
        if let Some(d) = self.missing_dir() {
            return Unserved::NoSuchPath(d.display().to_string());
        }
        let unreadable = |e: RegistryError| Unserved::Unreadable(e.to_string());
        match self.alias(alias).await {
            Ok(Some(r)) => return Unserved::Points { version: r.version },
            Ok(None) => {}
            Err(e) => return unreadable(e),
        }
        match self.list_versions().await {
            Ok(l) if l.versions.is_empty() && l.broken.is_empty() => return Unserved::NoVersions,
            Ok(_) => {}
            Err(e) => return unreadable(e),
        }
        match self.aliases().await {
            Ok(existing) => Unserved::NoSuchAlias { existing },
            Err(e) => unreadable(e),
        }
    }

    /// Every alias name with at least one move, sorted.
    pub async fn aliases(&self) -> Result<Vec<String>, RegistryError> {
        self.journal_names("aliases").await
    }

    /// The alias's latest readable move, or `None` if it was never set. Corrupt records on
    /// top are skipped: [`alias_state`](Self::alias_state) says which.
    pub async fn alias(&self, name: &str) -> Result<Option<AliasRecord>, RegistryError> {
        Ok(self.alias_state(name).await?.current)
    }

    /// The alias's latest readable move and the corrupt records above it. A store error is
    /// an error; a record that does not parse is skipped for the one below it, so one bad
    /// record cannot stop servers or the CLI (`alias repair` then supersedes it).
    pub async fn alias_state(&self, name: &str) -> Result<AliasState, RegistryError> {
        check_alias(name)?;
        let seqs = self.alias_seqs(name).await?;
        let mut state = AliasState {
            next_seq: seqs.last().map_or(1, |s| s + 1),
            ..Default::default()
        };
        for &seq in seqs.iter().rev() {
            match self.alias_record(name, seq).await {
                Ok(r) => {
                    state.current = Some(r);
                    break;
                }
                Err(RegistryError::CorruptAlias { seq, reason, .. }) => {
                    state.corrupt.insert(0, CorruptRecord { seq, reason });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(state)
    }

    /// Every readable move of the alias, oldest first (corrupt records left out).
    pub async fn alias_history(&self, name: &str) -> Result<Vec<AliasRecord>, RegistryError> {
        Ok(self.alias_journal(name).await?.records)
    }

    /// Every record of the alias, the corrupt ones apart, oldest first.
    pub async fn alias_journal(&self, name: &str) -> Result<AliasJournal, RegistryError> {
        check_alias(name)?;
        let mut out = AliasJournal::default();
        for seq in self.alias_seqs(name).await? {
            match self.alias_record(name, seq).await {
                Ok(r) => out.records.push(r),
                Err(RegistryError::CorruptAlias { seq, reason, .. }) => {
                    out.corrupt.push(CorruptRecord { seq, reason })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Supersedes the corrupt records on top of the alias with a new `repair` record, pointing
    /// at `to` or else at the last readable move's version (which must still load). The
    /// corrupt records stay in the history.
    pub async fn repair_alias(
        &self,
        name: &str,
        to: Option<&str>,
        mv: &Move,
    ) -> Result<AliasRecord, RegistryError> {
        let state = self.alias_state(name).await?;
        let Some(bad) = state.corrupt.last() else {
            return Err(RegistryError::NothingToRepair(name.to_string()));
        };
        let previous = state.current.as_ref().map(|r| r.version.clone());
        let version = match (to, &previous) {
            (Some(v), _) => v.to_string(),
            (None, Some(v)) => v.clone(),
            (None, None) => return Err(RegistryError::NoGoodRecord(name.to_string())),
        };
        self.load(&version).await?;
        let mut mv = mv.clone();
        if mv.reason.trim().is_empty() {
            mv.reason = format!("repair: record {} was corrupt", bad.seq);
        }
        self.write_move(name, state.next_seq, &version, previous, &mv, "repair")
            .await
    }

    /// Points `name` at `version`, if the alias is where `expect` says. The version must
    /// exist and pass its checksums. Losing a race to a concurrent mover is an error naming
    /// the version that won; nothing is written then.
    pub async fn set_alias(
        &self,
        name: &str,
        version: &str,
        expect: &Expect,
        mv: &Move,
    ) -> Result<AliasRecord, RegistryError> {
        mv.check_reason()?;
        self.move_alias(name, version, expect, mv, "set").await
    }

    /// Steps the alias back one deployment: to the version set before the current one, not
    /// rolled back from already, so a second rollback goes further back instead of returning
    /// to the version just left. Without a reason the move is recorded as "rollback".
    pub async fn rollback_alias(
        &self,
        name: &str,
        mv: &Move,
    ) -> Result<AliasRecord, RegistryError> {
        let history = self.alias_history(name).await?;
        let current = history
            .last()
            .ok_or_else(|| RegistryError::AliasNotFound(name.to_string()))?;
        let target = rollback_target(&history)
            .ok_or_else(|| RegistryError::NothingToRollBack(name.to_string()))?;
        self.move_alias(
            name,
            &target,
            &Expect::Version(current.version.clone()),
            &mv.or_rollback(),
            "rollback",
        )
        .await
    }

    async fn move_alias(
        &self,
        name: &str,
        version: &str,
        expect: &Expect,
        mv: &Move,
        action: &str,
    ) -> Result<AliasRecord, RegistryError> {
        check_alias(name)?;
        // Verify the target before anything is written: an alias never points at a version
        // that is missing or corrupt.
        self.load(version).await?;
        let state = self.alias_state(name).await?;
        // The corrupt record may have meant anything: a compare-and-swap against the record
        // below it would guess. Repair first, on purpose.
        if let Some(bad) = state.corrupt.last() {
            return Err(RegistryError::NeedsRepair {
                alias: name.to_string(),
                seq: bad.seq,
                reason: bad.reason.clone(),
            });
        }
        let current = state.current;
        let current_version = current.as_ref().map(|r| r.version.clone());
        let ok = match expect {
            Expect::Any => true,
            Expect::Absent => current.is_none(),
            Expect::Version(v) => current_version.as_deref() == Some(v.as_str()),
        };
        if !ok {
            return Err(RegistryError::ExpectMismatch {
                alias: name.to_string(),
                expected: match expect {
                    Expect::Version(v) => v.clone(),
                    _ => "none".into(),
                },
                actual: current_version.unwrap_or_else(|| "none".into()),
            });
        }
        // A move to where the alias already is would be a no-op in the history, and it would
        // let a stale compare-and-swap succeed after one (A -> A while B expected A).
        if current_version.as_deref() == Some(version) {
            return Err(RegistryError::Unchanged {
                alias: name.to_string(),
                version: version.to_string(),
            });
        }
        self.write_move(name, state.next_seq, version, current_version, mv, action)
            .await
    }

    /// Writes move `seq` create-if-absent; losing the number to another writer is an error
    /// naming the version that won.
    async fn write_move(
        &self,
        name: &str,
        seq: u64,
        version: &str,
        previous: Option<String>,
        mv: &Move,
        action: &str,
    ) -> Result<AliasRecord, RegistryError> {
        let record = AliasRecord {
            alias: name.to_string(),
            seq,
            version: version.to_string(),
            previous,
            action: action.to_string(),
            actor: mv.actor.clone(),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            reason: mv.reason.clone(),
        };
        let body = serde_json::to_vec_pretty(&record)?;
        if self.journal_create(&["aliases", name], seq, body).await? {
            Ok(record)
        } else {
            let winner = self.alias_record(name, seq).await?;
            Err(RegistryError::LostRace {
                alias: name.to_string(),
                winner: winner.version,
                actor: winner.actor,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: &str, action: &str) -> AliasRecord {
        AliasRecord {
            alias: "production".into(),
            seq: 0,
            version: version.into(),
            previous: None,
            action: action.into(),
            actor: "t".into(),
            at: String::new(),
            reason: String::new(),
        }
    }

    #[test]
    fn rollbacks_step_back_through_the_deployments() {
        let h = |moves: &[(&str, &str)]| {
            let recs: Vec<AliasRecord> = moves.iter().map(|(v, a)| record(v, a)).collect();
            rollback_target(&recs)
        };
        assert_eq!(h(&[("A", "set")]), None);
        assert_eq!(
            h(&[("A", "set"), ("B", "set"), ("C", "set")]).as_deref(),
            Some("B")
        );
        // After rolling back C -> B, the next rollback goes to A, not back to C.
        let two = [("A", "set"), ("B", "set"), ("C", "set"), ("B", "rollback")];
        assert_eq!(h(&two).as_deref(), Some("A"));
        let three = [("A", "set"), ("B", "set"), ("A", "rollback")];
        assert_eq!(h(&three), None);
        // A set after a rollback starts a new line: its rollback returns to where it came from.
        let again = [("A", "set"), ("B", "set"), ("A", "rollback"), ("C", "set")];
        assert_eq!(h(&again).as_deref(), Some("A"));
    }
}

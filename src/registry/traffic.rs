//! Traffic documents: which A/B experiment, if any, splits the customers an alias serves.
//!
//! A document belongs to an alias (`traffic/<alias>/<seq>.json`) and moves like one: numbered
//! create-if-absent records in a [journal](super::journal), so a change is a compare-and-swap
//! and the records are the audit history. A `stop` record sends all traffic back to the alias.

use serde::{Deserialize, Serialize};

use crate::routing::Experiment;

use super::alias::check_alias;
use super::{Move, Registry, RegistryError};

/// One change of an alias's traffic: an experiment started or changed (`set`), or stopped
/// (`stop`, `experiment` empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficRecord {
    pub alias: String,
    pub seq: u64,
    pub experiment: Option<Experiment>,
    pub action: String,
    pub actor: String,
    pub at: String,
    pub reason: String,
}

impl Registry {
    async fn traffic_record(&self, alias: &str, seq: u64) -> Result<TrafficRecord, RegistryError> {
        let corrupt = |reason: String| RegistryError::CorruptTraffic {
            alias: alias.to_string(),
            seq,
            reason,
        };
        let bytes = self.journal_read(&["traffic", alias], seq).await?;
        let r: TrafficRecord =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if r.seq != seq || r.alias != alias {
            return Err(corrupt(format!(
                "record says alias {} seq {}",
                r.alias, r.seq
            )));
        }
        if let Some(e) = &r.experiment {
            e.validate().map_err(|e| corrupt(e.to_string()))?;
        }
        Ok(r)
    }

    /// The alias's latest traffic record, or `None` if no experiment was ever set.
    pub async fn traffic(&self, alias: &str) -> Result<Option<TrafficRecord>, RegistryError> {
        check_alias(alias)?;
        match self.journal_seqs(&["traffic", alias]).await?.last() {
            Some(&seq) => Ok(Some(self.traffic_record(alias, seq).await?)),
            None => Ok(None),
        }
    }

    /// Every traffic change of the alias, oldest first.
    pub async fn traffic_history(&self, alias: &str) -> Result<Vec<TrafficRecord>, RegistryError> {
        check_alias(alias)?;
        let mut out = Vec::new();
        for seq in self.journal_seqs(&["traffic", alias]).await? {
            out.push(self.traffic_record(alias, seq).await?);
        }
        Ok(out)
    }

    /// Starts or changes the alias's experiment. Every version it names must exist and pass
    /// its checksums; an empty salt becomes the experiment's name. `expect_seq`, when given,
    /// is the record the caller last saw (0: none).
    pub async fn set_traffic(
        &self,
        alias: &str,
        mut experiment: Experiment,
        expect_seq: Option<u64>,
        mv: &Move,
    ) -> Result<TrafficRecord, RegistryError> {
        mv.check_reason()?;
        if experiment.salt.is_empty() {
            experiment.salt = experiment.name.clone();
        }
        experiment.validate()?;
        for v in experiment.versions() {
            self.load(&v).await?;
        }
        self.write_traffic(alias, Some(experiment), expect_seq, mv, "set")
            .await
    }

    /// Stops the alias's experiment: all traffic goes back to the alias.
    pub async fn stop_traffic(
        &self,
        alias: &str,
        expect_seq: Option<u64>,
        mv: &Move,
    ) -> Result<TrafficRecord, RegistryError> {
        mv.check_reason()?;
        self.write_traffic(alias, None, expect_seq, mv, "stop")
            .await
    }

    async fn write_traffic(
        &self,
        alias: &str,
        experiment: Option<Experiment>,
        expect_seq: Option<u64>,
        mv: &Move,
        action: &str,
    ) -> Result<TrafficRecord, RegistryError> {
        let current = self.traffic(alias).await?;
        let current_seq = current.as_ref().map_or(0, |r| r.seq);
        if let Some(want) = expect_seq {
            if want != current_seq {
                return Err(RegistryError::TrafficMoved {
                    alias: alias.to_string(),
                    expected: want,
                    actual: current_seq,
                });
            }
        }
        let running = current.as_ref().and_then(|r| r.experiment.as_ref());
        if experiment.is_none() && running.is_none() {
            return Err(RegistryError::NoExperiment(alias.to_string()));
        }
        if experiment.is_some() && experiment.as_ref() == running {
            return Err(RegistryError::TrafficUnchanged(alias.to_string()));
        }
        let record = TrafficRecord {
            alias: alias.to_string(),
            seq: current_seq + 1,
            experiment,
            action: action.to_string(),
            actor: mv.actor.clone(),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            reason: mv.reason.clone(),
        };
        let body = serde_json::to_vec_pretty(&record)?;
        if self
            .journal_create(&["traffic", alias], record.seq, body)
            .await?
        {
            Ok(record)
        } else {
            let winner = self.traffic_record(alias, record.seq).await?;
            Err(RegistryError::TrafficMoved {
                alias: alias.to_string(),
                expected: current_seq,
                actual: winner.seq,
            })
        }
    }
}

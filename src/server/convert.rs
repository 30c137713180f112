//! Between the wire and the domain: proto messages to domain values, domain errors to
//! `tonic::Status`. The one place that maps error kinds to gRPC codes.

use tonic::{Code, Status};

use crate::features::{channel_id, Transaction, MAX_TS, MIN_TS};
use crate::proto::v1 as pb;
use crate::registry::RegistryError;
use crate::scoring::{Limits, Reason, Scored, ScoringError};

pub fn scoring_code(e: &ScoringError) -> Code {
    match e {
        ScoringError::Invalid { .. } => Code::InvalidArgument,
        ScoringError::VersionNotFound(_) => Code::NotFound,
        ScoringError::NotReady => Code::Unavailable,
    }
}

pub fn scoring_status(e: ScoringError) -> Status {
    Status::new(scoring_code(&e), e.to_string())
}

pub fn registry_status(e: RegistryError) -> Status {
    let code = match &e {
        RegistryError::VersionNotFound(_) | RegistryError::AliasNotFound(_) => Code::NotFound,
        RegistryError::BadVersionId(_)
        | RegistryError::BadAliasName(_)
        | RegistryError::BadUrl { .. }
        | RegistryError::BadTraffic(_) => Code::InvalidArgument,
        RegistryError::ExpectMismatch { .. }
        | RegistryError::Unchanged { .. }
        | RegistryError::NothingToRollBack(_)
        | RegistryError::Corrupt { .. }
        | RegistryError::CorruptAlias { .. }
        | RegistryError::CorruptTraffic { .. }
        | RegistryError::NoExperiment(_) => Code::FailedPrecondition,
        RegistryError::LostRace { .. }
        | RegistryError::VersionExists(_)
        | RegistryError::TrafficMoved { .. } => Code::Aborted,
        RegistryError::Store(_) => Code::Unavailable,
    };
    Status::new(code, e.to_string())
}

fn invalid(field: String, message: impl Into<String>) -> ScoringError {
    ScoringError::Invalid {
        field,
        message: message.into(),
    }
}

/// A protobuf timestamp as Unix seconds, inside the range features accept.
pub fn timestamp(t: &prost_types::Timestamp, field: &str) -> Result<i64, ScoringError> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(invalid(
            field.into(),
            format!("nanos {} is out of range", t.nanos),
        ));
    }
    if t.seconds < MIN_TS {
        return Err(invalid(field.into(), "is before 1970-01-01"));
    }
    if t.seconds >= MAX_TS {
        return Err(invalid(field.into(), "is after 2199-12-31"));
    }
    Ok(t.seconds)
}

/// Converts a history, refusing an oversize one before converting anything.
pub fn transactions(h: &pb::History, limits: &Limits) -> Result<Vec<Transaction>, ScoringError> {
    crate::scoring::check_history_len(h.transactions.len(), limits)?;
    h.transactions
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let field = format!("history.transactions[{i}].time");
            let time = t
                .time
                .as_ref()
                .ok_or_else(|| invalid(field.clone(), "is missing"))?;
            Ok(Transaction {
                ts: timestamp(time, &field)?,
                amount: t.amount,
                points_earned: t.points_earned,
                points_redeemed: t.points_redeemed,
                channel: channel_id(&t.channel),
            })
        })
        .collect()
}

pub fn reasons(r: Vec<Reason>) -> Vec<pb::Reason> {
    r.into_iter()
        .map(|r| pb::Reason {
            feature: r.feature.to_string(),
            churn_contribution: r.churn_contribution,
            text: r.text,
        })
        .collect()
}

pub fn response(
    customer_id: String,
    s: Scored,
    version: &str,
    horizon_days: u32,
) -> pb::ScoreResponse {
    pb::ScoreResponse {
        customer_id,
        churn_probability: s.churn,
        clv: s.clv,
        horizon_days,
        segment: s.segment.as_str().to_string(),
        reasons: reasons(s.reasons),
        model_version: version.to_string(),
        experiment: String::new(),
        arm: String::new(),
        features: None,
        holdout: false,
    }
}

pub fn alias_move(r: crate::registry::AliasRecord) -> pb::AliasMove {
    pb::AliasMove {
        alias: r.alias,
        seq: r.seq,
        version: r.version,
        previous: r.previous.unwrap_or_default(),
        action: r.action,
        actor: r.actor,
        at: r.at,
        reason: r.reason,
    }
}

pub fn version_info(m: &crate::model::Manifest) -> pb::VersionInfo {
    pb::VersionInfo {
        version: m.version.clone(),
        created_at: m.created_at.clone(),
        churn_roc_auc: m.metrics.churn.roc_auc,
        churn_baseline_roc_auc: m.metrics.churn_baseline.roc_auc,
        clv_spearman: m.metrics.clv.spearman,
        clv_baseline_spearman: m.metrics.clv_baseline.spearman,
        manifest_json: String::from_utf8_lossy(&m.to_json()).into_owned(),
    }
}

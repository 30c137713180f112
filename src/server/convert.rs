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
        ScoringError::VersionUnavailable { .. }
        | ScoringError::NotReady
        | ScoringError::Busy(_)
        | ScoringError::StateUnavailable(_) => Code::Unavailable,
        ScoringError::VersionUnusable { .. } | ScoringError::StateUnusable(_) => {
            Code::FailedPrecondition
        }
        ScoringError::CustomerNotFound(_) | ScoringError::ModelNotServed(_) => Code::NotFound,
        ScoringError::TooManyPins(_) => Code::ResourceExhausted,
    }
}

/// A BatchScore item's error: its code name, the field (if a field is wrong) and the message.
pub fn item_error(e: ScoringError) -> pb::ItemError {
    let code = super::metrics::code_name(scoring_code(&e)).to_string();
    let (field, message) = match e {
        ScoringError::Invalid { field, message } => (field, message),
        other => (String::new(), other.to_string()),
    };
    pb::ItemError {
        code,
        field,
        message,
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
        | RegistryError::BadTraffic(_)
        | RegistryError::ReasonRequired => Code::InvalidArgument,
        RegistryError::ExpectMismatch { .. }
        | RegistryError::Unchanged { .. }
        | RegistryError::NothingToRollBack(_)
        | RegistryError::NoSuchRegistry(_)
        | RegistryError::Corrupt { .. }
        | RegistryError::CorruptAlias { .. }
        | RegistryError::NeedsRepair { .. }
        | RegistryError::NothingToRepair(_)
        | RegistryError::NoGoodRecord(_)
        | RegistryError::CorruptTraffic { .. }
        | RegistryError::NoExperiment(_)
        | RegistryError::TrafficUnchanged(_) => Code::FailedPrecondition,
        RegistryError::LostRace { .. }
        | RegistryError::VersionExists(_)
        | RegistryError::TrafficMoved { .. } => Code::Aborted,
        RegistryError::Store(_) => Code::Unavailable,
        RegistryError::Encode(_) => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// A protobuf timestamp as Unix seconds, inside the range features accept.
pub fn timestamp(t: &prost_types::Timestamp, field: &str) -> Result<i64, ScoringError> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(ScoringError::invalid(
            field,
            format!("nanos {} is out of range", t.nanos),
        ));
    }
    if t.seconds < MIN_TS {
        return Err(ScoringError::invalid(field, "is before 1970-01-01"));
    }
    if t.seconds >= MAX_TS {
        return Err(ScoringError::invalid(field, "is after 2199-12-31"));
    }
    Ok(t.seconds)
}

/// Converts a history, refusing an oversize one before converting anything.
pub fn transactions(h: &pb::History, limits: &Limits) -> Result<Vec<Transaction>, ScoringError> {
    crate::scoring::check_history_len(h.transactions.len(), limits)?;
    h.transactions
        .iter()
        .enumerate()
        .map(|(i, t)| transaction(t, &format!("history.transactions[{i}]")))
        .collect()
}

/// Converts one transaction; errors name its fields under `at`.
pub fn transaction(t: &pb::Transaction, at: &str) -> Result<Transaction, ScoringError> {
    let field = format!("{at}.time");
    let time = t
        .time
        .as_ref()
        .ok_or_else(|| ScoringError::invalid(field.clone(), "is missing"))?;
    Ok(Transaction {
        ts: timestamp(time, &field)?,
        amount: t.amount,
        points_earned: t.points_earned,
        points_redeemed: t.points_redeemed,
        channel: channel_id(&t.channel),
    })
}

/// A RecordPurchases event, checked: ids bounded, the transaction valid.
/// A purchase event for the live state; `now` bounds how far ahead its time may be.
pub fn event(
    e: &pb::PurchaseEvent,
    i: usize,
    now: i64,
) -> Result<crate::state::Event, ScoringError> {
    let at = format!("events[{i}]");
    if e.customer_id.is_empty() || e.customer_id.len() > 256 {
        return Err(ScoringError::invalid(
            format!("{at}.customer_id"),
            "must be 1 to 256 bytes",
        ));
    }
    if e.event_id.is_empty() || e.event_id.len() > 128 {
        return Err(ScoringError::invalid(
            format!("{at}.event_id"),
            "must be 1 to 128 bytes",
        ));
    }
    let t = e
        .transaction
        .as_ref()
        .ok_or_else(|| ScoringError::invalid(format!("{at}.transaction"), "is missing"))?;
    let at = format!("{at}.transaction");
    let tx = transaction(t, &at)?;
    crate::scoring::check_transaction(&tx, &at)?;
    if let Some(why) = crate::state::too_far_ahead(tx.ts, now) {
        return Err(ScoringError::invalid(format!("{at}.time"), why));
    }
    Ok(crate::state::Event {
        customer_id: e.customer_id.clone(),
        event_id: e.event_id.clone(),
        tx,
    })
}

/// Churn reasons carry their contribution as `churn_contribution`, CLV reasons as
/// `clv_contribution`.
fn reasons(r: Vec<Reason>, clv: bool) -> Vec<pb::Reason> {
    r.into_iter()
        .map(|r| pb::Reason {
            feature: r.feature.to_string(),
            churn_contribution: if clv { 0.0 } else { r.contribution },
            clv_contribution: if clv { r.contribution } else { 0.0 },
            text: r.text,
        })
        .collect()
}

fn timestamp_of(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

pub fn response(
    customer_id: String,
    s: Scored,
    version: &str,
    horizon_days: u32,
) -> pb::ScoreResponse {
    let t = s.timing;
    pb::ScoreResponse {
        customer_id,
        churn_probability: s.churn,
        clv: s.clv,
        horizon_days,
        segment: s.segment.as_str().to_string(),
        reasons: reasons(s.reasons, false),
        model_version: version.to_string(),
        typical_gap_days: t.typical_gap_days,
        expected_next_purchase: timestamp_of(t.expected_next_purchase),
        days_overdue: t.days_overdue,
        overdue_percentile: t.overdue_percentile,
        contact_from: timestamp_of(t.contact_from),
        contact_by: timestamp_of(t.contact_by),
        segment_reason: s.segment_reason,
        clv_reasons: reasons(s.clv_reasons, true),
        out_of_range: s.out_of_range.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
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

pub fn version_info(m: &crate::model::Manifest) -> Result<pb::VersionInfo, Status> {
    let json = m.to_json().map_err(|e| registry_status(e.into()))?;
    Ok(pb::VersionInfo {
        version: m.version.clone(),
        created_at: m.created_at.clone(),
        churn_roc_auc: m.metrics.churn.roc_auc,
        churn_baseline_roc_auc: m.metrics.churn_baseline.roc_auc,
        clv_spearman: m.metrics.clv.spearman,
        clv_baseline_spearman: m.metrics.clv_baseline.spearman,
        manifest_json: String::from_utf8_lossy(&json).into_owned(),
    })
}

/// The served version's drift as the Drift RPC answers it.
pub fn drift(model: &crate::scoring::Model, now: i64) -> pb::DriftResponse {
    let training = |seg: &str| {
        model
            .manifest
            .segment_table
            .iter()
            .find(|r| r.segment == seg)
            .map_or(0.0, |r| r.share)
    };
    let Some(report) = model.drift.as_ref().map(|d| d.report(now)) else {
        return pb::DriftResponse {
            model_version: model.version.clone(),
            ..Default::default()
        };
    };
    pb::DriftResponse {
        model_version: model.version.clone(),
        profiled: true,
        rows: report.rows,
        window_seconds: crate::drift::WINDOW_SECS as u32,
        distributions: report
            .distributions
            .into_iter()
            .map(|d| pb::DistributionDrift {
                name: d.name,
                kind: d.kind.to_string(),
                psi: d.psi,
                expected: d.expected,
                actual: d.actual,
            })
            .collect(),
        segments: report
            .segments
            .iter()
            .map(|(s, share)| pb::SegmentShare {
                segment: s.as_str().to_string(),
                share: *share,
                training_share: training(s.as_str()),
            })
            .collect(),
    }
}

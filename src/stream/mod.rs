//! Purchases from an event stream into the live state, and segment changes out of it: what a
//! purchase message is, and when a customer's segment has changed enough to tell the CRM.
//! Nothing here knows Kafka ([`kafka`] is the transport) or gRPC.
//!
//! A purchase message is JSON: the transaction CSV's fields plus the caller's `event_id`
//! (see [`PurchaseMessage`]). A segment change is published when the segment a customer is
//! scored into differs from the *mark*, the segment last published for them, which the state
//! store keeps and replaces atomically ([`crate::state::CustomerStore::set_marks`]): the
//! writer that replaces a mark publishes, so a change goes out at most once, however many
//! replicas look, and a replay of purchases already applied publishes nothing.

pub mod kafka;

use serde::{Deserialize, Serialize};

use crate::features::{channel_id, Transaction};
use crate::scoring::{self, Explain, Model, ModelInput, Scored};
use crate::state::{CustomerState, CustomerStore, Event, StateError};

/// One purchase (or return, with a negative amount) on the purchase topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseMessage {
    /// The producer's id for the event, unique per customer (1 to 128 bytes): a message
    /// delivered twice is applied once.
    pub event_id: String,
    /// 1 to 256 bytes.
    pub customer_id: String,
    /// YYYY-MM-DD, YYYY-MM-DD HH:MM[:SS[.fff]] (UTC) or RFC 3339.
    pub timestamp: String,
    pub amount: f64,
    #[serde(default)]
    pub points_earned: f64,
    #[serde(default)]
    pub points_redeemed: f64,
    #[serde(default)]
    pub channel: Option<String>,
    /// Items in the purchase; accepted (the CSV has it) and not used by the features.
    #[serde(default)]
    pub quantity: Option<u32>,
}

/// Why a message was skipped: the field and the problem, never the field's value (a message
/// carries a customer id and their purchase; neither goes into a log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct MessageError {
    pub field: String,
    pub problem: String,
}

fn bad(field: &str, problem: impl Into<String>) -> MessageError {
    MessageError {
        field: field.to_string(),
        problem: problem.into(),
    }
}

/// Reads a purchase message into the event the state applies, with the same rules as
/// `RecordPurchases` (the ranges of [`scoring::check_transaction`], at most
/// [`crate::state::MAX_AHEAD_SECS`] ahead of `now`).
pub fn purchase(payload: &[u8], now: i64) -> Result<Event, MessageError> {
    let m: PurchaseMessage = serde_json::from_slice(payload).map_err(|e| {
        // serde_json's message quotes the offending value; say where and what kind only.
        let kind = match e.classify() {
            serde_json::error::Category::Data => "does not match the purchase schema",
            serde_json::error::Category::Eof => "ends early",
            _ => "is not JSON",
        };
        bad(
            "message",
            format!("{kind} (line {} column {})", e.line(), e.column()),
        )
    })?;
    if m.event_id.is_empty() || m.event_id.len() > 128 {
        return Err(bad("event_id", "must be 1 to 128 bytes"));
    }
    if m.customer_id.is_empty() || m.customer_id.len() > 256 {
        return Err(bad("customer_id", "must be 1 to 256 bytes"));
    }
    let ts = crate::time::parse_timestamp(&m.timestamp).ok_or_else(|| {
        bad(
            "timestamp",
            format!("is not {}", crate::time::TIMESTAMP_FORMS),
        )
    })?;
    let tx = Transaction {
        ts,
        amount: m.amount,
        points_earned: m.points_earned,
        points_redeemed: m.points_redeemed,
        channel: m.channel.as_deref().map_or(0, channel_id),
    };
    scoring::check_transaction(&tx, "").map_err(|e| match e {
        scoring::ScoringError::Invalid { field, message } => {
            let field = match field.trim_start_matches('.') {
                "time" => "timestamp",
                f => f,
            };
            bad(field, message)
        }
        other => bad("message", other.to_string()),
    })?;
    if let Some(why) = crate::state::too_far_ahead(ts, now) {
        return Err(bad("timestamp", why));
    }
    Ok(Event {
        customer_id: m.customer_id,
        event_id: m.event_id,
        tx,
    })
}

/// A customer moved segment: published keyed by the customer id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentChange {
    pub customer_id: String,
    /// The segment last published for them; `None` for a customer seen for the first time.
    pub from: Option<String>,
    pub to: String,
    /// The instant they were scored at (RFC 3339).
    pub at: String,
    /// The model version that scored them.
    pub version: String,
    /// Why they are in `to`, then what moved their churn probability most.
    pub reasons: Vec<String>,
}

/// When a customer is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Just after their latest purchase: what a purchase did to their segment (a backlog
    /// replayed from the topic is judged as it happened, not as of today).
    AfterLatestPurchase,
    /// At this instant (the re-score: what the passage of time did), or just after their
    /// latest purchase if that is later.
    At(i64),
}

impl When {
    fn instant(self, state: &CustomerState) -> i64 {
        let after_latest = state.last_event_ts().saturating_add(1);
        match self {
            When::AfterLatestPurchase => after_latest,
            When::At(now) => state.scored_at(now),
        }
    }
}

/// Scores each customer `when` with `model`, replaces their marks and returns the changes to
/// publish (customers without stored state are skipped: erased, or never seen).
pub async fn changes(
    store: &dyn CustomerStore,
    model: &Model,
    ids: &[&str],
    when: When,
) -> Result<Vec<SegmentChange>, StateError> {
    let states = store.get_many(ids).await?;
    let mut scored: Vec<(&str, Scored, i64)> = Vec::with_capacity(ids.len());
    for (id, state) in ids.iter().zip(states) {
        let Some(state) = state else { continue };
        let at = when.instant(&state);
        let input = ModelInput::of(model, &state.summary()?, at)?;
        let explain = Explain {
            reasons: true,
            ..Explain::default()
        };
        scored.push((id, scoring::score_input(model, &input, at, explain), at));
    }
    let marks: Vec<(&str, &str)> = scored
        .iter()
        .map(|(id, s, _)| (*id, s.segment.as_str()))
        .collect();
    let replaced = store.set_marks(&marks).await?;
    Ok(scored
        .into_iter()
        .zip(replaced)
        .filter_map(|((id, s, at), before)| {
            let from = before?;
            let mut reasons = vec![s.segment_reason.clone()];
            reasons.extend(s.reasons.iter().map(|r| r.text.clone()));
            Some(SegmentChange {
                customer_id: id.to_string(),
                from,
                to: s.segment.as_str().to_string(),
                at: crate::time::fmt_ts(at),
                version: model.version.clone(),
                reasons,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests;

//! `loyalscore state`: load a transaction log into the live customer state, show a
//! customer's state and score, erase a customer (GDPR), list erasures. Works on the store
//! directly (an embedded file no server holds open, or Redis).

use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;

use super::admin::{mv, print_records, Who};
use crate::flags::{self, AliasArgs, StateArgs, TransactionsArgs};
use crate::registry::Registry;
use crate::scoring::{score, Explain, Model};
use crate::state::{CustomerState, CustomerStore, Event};
use crate::trainer::TransactionLog;

#[derive(Subcommand, Debug)]
pub enum StateCmd {
    /// Fold a transaction log into the state: every customer in it gets the state of their
    /// whole history there (replacing what was stored for them).
    Load {
        #[command(flatten)]
        transactions: TransactionsArgs,
        #[command(flatten)]
        state: StateArgs,
    },
    /// A customer's stored state, and their score now with the alias's version.
    Show {
        /// The customer's id.
        customer: String,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        alias: AliasArgs,
        /// Score as of: YYYY-MM-DD (the end of that day) or an RFC 3339 instant; default now.
        #[arg(long, value_parser = flags::as_of)]
        as_of: Option<i64>,
    },
    /// Erase a customer's state (a GDPR erasure request); the erasure is recorded with a
    /// salted hash of the id, never the id.
    Forget {
        /// The customer's id.
        customer: String,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        who: Who,
    },
    /// Every erasure recorded, oldest first.
    Erasures {
        #[command(flatten)]
        state: StateArgs,
    },
}

async fn open(s: &StateArgs) -> anyhow::Result<Arc<dyn CustomerStore>> {
    crate::state::open(&s.state)
        .await?
        .context("--state is off: name a state file or a redis:// URL")
}

pub fn run(
    cmd: StateCmd,
    registry: &str,
    json: bool,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    match cmd {
        StateCmd::Load {
            transactions,
            state,
        } => {
            let log = super::train::load_log(&transactions, rt)?;
            let (customers, events) = rt.block_on(load(&log, &state))?;
            println!(
                "loaded {events} transactions of {customers} customers into {}",
                state.state
            );
            Ok(())
        }
        StateCmd::Show {
            customer,
            state,
            alias,
            as_of,
        } => rt.block_on(show(&customer, &state, registry, &alias, as_of, json)),
        StateCmd::Forget {
            customer,
            state,
            who,
        } => rt.block_on(async {
            let who = mv(who);
            if who.reason.trim().is_empty() {
                anyhow::bail!("--reason is required: say why, for the erasure record");
            }
            let e = open(&state)
                .await?
                .forget(&customer, &who.actor, &who.reason)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else if e.found {
                println!("erased; recorded as {} at {}", e.customer, e.at);
            } else {
                println!(
                    "no state was stored; the request is recorded as {}",
                    e.customer
                );
            }
            Ok(())
        }),
        StateCmd::Erasures { state } => rt.block_on(async {
            let all = open(&state).await?.erasures().await?;
            print_records(
                json,
                &all,
                &["AT", "CUSTOMER HASH", "FOUND", "BY", "REASON"],
                |e| {
                    vec![
                        e.at.clone(),
                        e.customer.clone(),
                        e.found.to_string(),
                        e.actor.clone(),
                        e.reason.clone(),
                    ]
                },
            )
        }),
    }
}

/// One customer's log rows as events, with ids that make loading the same log twice
/// harmless: the row's fields and its place among identical rows.
pub fn log_events(log: &TransactionLog, c: usize) -> Vec<Event> {
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    log.customer(c)
        .iter()
        .map(|r| {
            let fields = format!(
                "{}|{}|{}|{}|{}",
                r.ts, r.amount, r.points_earned, r.points_redeemed, r.channel
            );
            let k = seen.entry(fields.clone()).or_default();
            *k += 1;
            Event {
                customer_id: log.ids[c].clone(),
                event_id: format!("load:{fields}|{k}"),
                tx: r.tx(),
            }
        })
        .collect()
}

/// Builds every customer's state from the log and writes it in chunks.
pub(crate) async fn load(log: &TransactionLog, s: &StateArgs) -> anyhow::Result<(usize, usize)> {
    let store = open(s).await?;
    let mut chunk = Vec::with_capacity(10_000);
    let mut events = 0;
    for c in 0..log.n_customers() {
        let mut state = CustomerState::default();
        for e in log_events(log, c) {
            state.apply(&e, s.state_lateness_secs.max(0))?;
            events += 1;
        }
        chunk.push((log.ids[c].clone(), state));
        if chunk.len() == 10_000 {
            store.put_all(std::mem::take(&mut chunk)).await?;
        }
    }
    store.put_all(chunk).await?;
    Ok((log.n_customers(), events))
}

async fn show(
    customer: &str,
    s: &StateArgs,
    registry: &str,
    alias: &AliasArgs,
    as_of: Option<i64>,
    json: bool,
) -> anyhow::Result<()> {
    let state = open(s)
        .await?
        .get(customer)
        .await?
        .with_context(|| format!("customer {customer} has no stored state"))?;
    let summary = state.summary()?;
    let as_of = as_of.unwrap_or_else(|| state.scored_at(chrono::Utc::now().timestamp()));
    let f = summary.features(as_of)?;
    let reg = Registry::open(registry)?;
    let version = reg
        .alias(&alias.alias)
        .await?
        .with_context(|| format!("alias {} does not exist", alias.alias))?
        .version;
    let (manifest, bundle) = reg.load(&version).await?;
    let model = Model::new(manifest, bundle)?;
    let explain = Explain {
        reasons: true,
        ..Explain::default()
    };
    let sc = score(&model, &f, as_of, explain);
    let t = &sc.timing;
    let fmt = crate::time::fmt_day;
    let fields = serde_json::json!({
        "customer_id": customer,
        "purchases": summary.purchases(),
        "returns": summary.returns(),
        "visits": summary.visits(),
        "first_purchase": summary.first_ts().map(crate::time::fmt_ts),
        "last_purchase": summary.last_ts().map(crate::time::fmt_ts),
        "pending_events": state.pending_events(),
        "as_of": crate::time::fmt_ts(as_of),
        "model_version": model.version,
        "churn_probability": sc.churn,
        "clv": sc.clv,
        "segment": sc.segment.as_str(),
        "segment_reason": sc.segment_reason,
        "typical_gap_days": t.typical_gap_days,
        "expected_next_purchase": fmt(t.expected_next_purchase),
        "days_overdue": t.days_overdue,
        "overdue_percentile": t.overdue_percentile,
        "contact_from": fmt(t.contact_from),
        "contact_by": fmt(t.contact_by),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&fields)?);
        return Ok(());
    }
    if let Some(obj) = fields.as_object() {
        for (k, v) in obj {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "-".into(),
                other => other.to_string(),
            };
            println!("{k:<24}{v}");
        }
    }
    Ok(())
}

//! `loyalscore score`: one customer scored by a running server, from flags or a JSON file.

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;

use crate::proto::v1 as pb;
use crate::proto::v1::scoring_client::ScoringClient;
use crate::trainer::time::{parse_as_of, parse_timestamp};

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// Server address.
    #[arg(
        long,
        env = "LOYALSCORE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    #[arg(long)]
    pub customer_id: Option<String>,
    /// A feature value, NAME=VALUE; repeat for every feature of the schema.
    #[arg(long = "feature", value_name = "NAME=VALUE")]
    pub features: Vec<String>,
    /// A JSON request: {"customer_id": .., "features": {name: value, ..}} or
    /// {"customer_id": .., "history": [{"time": .., "amount": .., "channel": ..}, ..]}.
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Score as of the end of this date, or this RFC 3339 instant (history only; default now).
    #[arg(long)]
    pub as_of: Option<String>,
    /// Pin a version instead of the one the server serves.
    #[arg(long)]
    pub version: Option<String>,
    /// Ask for the top three reasons.
    #[arg(long)]
    pub explain: bool,
}

#[derive(Deserialize)]
struct FileRequest {
    customer_id: Option<String>,
    features: Option<std::collections::BTreeMap<String, f64>>,
    history: Option<Vec<FileTx>>,
    as_of: Option<String>,
}

#[derive(Deserialize)]
struct FileTx {
    time: String,
    amount: f64,
    #[serde(default)]
    points_earned: f64,
    #[serde(default)]
    points_redeemed: f64,
    #[serde(default)]
    channel: String,
}

fn ts(s: &str, what: &str) -> anyhow::Result<prost_types::Timestamp> {
    let seconds = parse_timestamp(s)
        .with_context(|| format!("{what} {s:?} is neither YYYY-MM-DD nor RFC 3339"))?;
    Ok(prost_types::Timestamp { seconds, nanos: 0 })
}

fn request(a: &ScoreArgs) -> anyhow::Result<pb::ScoreRequest> {
    let mut req = pb::ScoreRequest {
        explain: a.explain,
        version: a.version.clone().unwrap_or_default(),
        ..Default::default()
    };
    let mut as_of = a.as_of.clone();
    if let Some(path) = &a.file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let f: FileRequest = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a score request", path.display()))?;
        req.customer_id = f.customer_id.unwrap_or_default();
        as_of = as_of.or(f.as_of);
        req.input = match (f.features, f.history) {
            (Some(fs), None) => Some(pb::score_request::Input::Features(pb::Features {
                names: fs.keys().cloned().collect(),
                values: fs.values().copied().collect(),
            })),
            (None, Some(h)) => Some(pb::score_request::Input::History(pb::History {
                transactions: h
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        Ok(pb::Transaction {
                            time: Some(ts(&t.time, &format!("history[{i}].time"))?),
                            amount: t.amount,
                            points_earned: t.points_earned,
                            points_redeemed: t.points_redeemed,
                            channel: t.channel.clone(),
                        })
                    })
                    .collect::<anyhow::Result<_>>()?,
            })),
            _ => bail!(
                "{}: give exactly one of \"features\" and \"history\"",
                path.display()
            ),
        };
    } else {
        let mut names = Vec::new();
        let mut values = Vec::new();
        for kv in &a.features {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--feature {kv:?} is not NAME=VALUE"))?;
            names.push(k.trim().to_string());
            values.push(
                v.trim()
                    .parse::<f64>()
                    .with_context(|| format!("--feature {kv:?}: {v:?} is not a number"))?,
            );
        }
        if names.is_empty() {
            bail!("give --feature NAME=VALUE (repeated) or --file REQUEST.json");
        }
        req.input = Some(pb::score_request::Input::Features(pb::Features {
            names,
            values,
        }));
    }
    if let Some(id) = &a.customer_id {
        req.customer_id = id.clone();
    }
    if let Some(t) = as_of {
        // As in the trainer, a date means the end of that day.
        let seconds = parse_as_of(&t)
            .with_context(|| format!("as_of {t:?} is neither YYYY-MM-DD nor RFC 3339"))?;
        req.as_of = Some(prost_types::Timestamp { seconds, nanos: 0 });
    }
    Ok(req)
}

pub async fn score(a: ScoreArgs, json: bool) -> anyhow::Result<()> {
    let req = request(&a)?;
    let mut client = ScoringClient::connect(a.server.clone())
        .await
        .with_context(|| format!("connecting to {}", a.server))?;
    let r = client
        .score(req)
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    if json {
        let reasons: Vec<_> = r
            .reasons
            .iter()
            .map(|x| serde_json::json!({"feature": x.feature, "churn_contribution": x.churn_contribution, "text": x.text}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "customer_id": r.customer_id,
                "churn_probability": r.churn_probability,
                "clv": r.clv,
                "horizon_days": r.horizon_days,
                "segment": r.segment,
                "model_version": r.model_version,
                "experiment": r.experiment,
                "arm": r.arm,
                "holdout": r.holdout,
                "reasons": reasons,
            }))?
        );
        return Ok(());
    }
    println!("customer          {}", r.customer_id);
    if r.holdout {
        println!(
            "experiment        {} (arm {}: held out, no model score)",
            r.experiment, r.arm
        );
        return Ok(());
    }
    println!(
        "churn probability {:.3} (no purchase within {} days)",
        r.churn_probability, r.horizon_days
    );
    println!(
        "CLV               {:.2} (spend within {} days)",
        r.clv, r.horizon_days
    );
    println!("segment           {}", r.segment);
    println!("model version     {}", r.model_version);
    if !r.arm.is_empty() {
        println!("experiment        {} (arm {})", r.experiment, r.arm);
    }
    for x in &r.reasons {
        println!("reason            {}", x.text);
    }
    Ok(())
}

//! `loyalscore score`: one customer scored by a running server, from flags or a JSON file;
//! `loyalscore health`: the server's health service, as a probe.

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;

use crate::flags::{self, ServerArgs};
use crate::proto::v1 as pb;
use crate::proto::v1::scoring_client::ScoringClient;
use crate::time::parse_timestamp;

#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The customer's id (overrides the one in --file). Alone, without --feature or --file,
    /// the server scores them from their stored state.
    #[arg(long)]
    pub customer_id: Option<String>,
    /// A feature value, NAME=VALUE; repeat for every feature of the schema.
    #[arg(long = "feature", value_name = "NAME=VALUE")]
    pub features: Vec<String>,
    /// A JSON request: {"customer_id": .., "features": {name: value, ..}} or
    /// {"customer_id": .., "history": [{"time": .., "amount": .., "channel": ..}, ..]}.
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Score as of: YYYY-MM-DD (the end of that day) or an RFC 3339 instant: a history's
    /// purchases before it, the stored state at it, or the instant the features were computed
    /// at (the timing's dates count from it). Default: now, or the file's as_of.
    #[arg(long, value_parser = flags::as_of)]
    pub as_of: Option<i64>,
    /// Pin this version id instead of the one the server serves (bypasses any experiment).
    #[arg(long)]
    pub version: Option<String>,
    /// Ask for the reasons (churn, CLV, segment) and the feature values used.
    #[arg(long)]
    pub explain: bool,
    /// Language of the reasons: en or de.
    #[arg(long, default_value = "en")]
    pub locale: String,
}

#[derive(Args, Debug)]
pub struct HealthArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The health service to ask: loyalscore.v1.Scoring (a model is served: readiness),
    /// liveness (the process answers), or "" (the whole server).
    #[arg(long, default_value = "loyalscore.v1.Scoring")]
    pub service: String,
}

impl ServerArgs {
    /// The server's endpoint, with TLS when the address is https:// (trusting `--tls-ca`,
    /// presenting `--tls-cert` when given).
    pub fn endpoint(&self) -> anyhow::Result<tonic::transport::Endpoint> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let server = &self.server;
        let mut endpoint = tonic::transport::Endpoint::from_shared(server.clone())
            .with_context(|| format!("--server {server:?} is not a server address"))?;
        let read = |p: &std::path::Path| {
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))
        };
        if server.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &self.tls_ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            endpoint = endpoint.tls_config(tls).context("TLS settings")?;
        } else if self.tls_ca.is_some() || self.tls_cert.is_some() {
            bail!("--tls-ca and --tls-cert need an https:// --server, not {server}");
        }
        Ok(endpoint)
    }

    /// Connects to the server.
    pub async fn connect(&self) -> anyhow::Result<tonic::transport::Channel> {
        self.endpoint()?
            .connect()
            .await
            .with_context(|| format!("connecting to {}", self.server))
    }

    /// `msg` as a request carrying `--token`, if one is given.
    pub fn request<T>(&self, msg: T) -> anyhow::Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = self.token.as_deref().filter(|t| !t.is_empty()) {
            let value = format!("Bearer {t}")
                .parse()
                .context("--token holds characters a header cannot carry")?;
            r.metadata_mut().insert("authorization", value);
        }
        Ok(r)
    }
}

/// Prints the status; an error (exit 1) unless it is SERVING.
pub async fn health(a: HealthArgs, json: bool) -> anyhow::Result<()> {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let channel = a.server.connect().await?;
    let r = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: a.service.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let status = r.status().as_str_name();
    if json {
        println!(
            "{}",
            serde_json::json!({"service": a.service, "status": status})
        );
    } else {
        println!("{status}");
    }
    if r.status() != tonic_health::pb::health_check_response::ServingStatus::Serving {
        bail!("{:?} is {status}", a.service);
    }
    Ok(())
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
        locale: a.locale.clone(),
        ..Default::default()
    };
    let mut as_of = a.as_of;
    if let Some(path) = &a.file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let f: FileRequest = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a score request", path.display()))?;
        req.customer_id = f.customer_id.unwrap_or_default();
        if as_of.is_none() {
            as_of = f
                .as_of
                .as_deref()
                .map(flags::as_of)
                .transpose()
                .map_err(|e| anyhow::anyhow!("{}: as_of {e}", path.display()))?;
        }
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
            if a.customer_id.is_none() {
                bail!("give --customer-id (scored from the server's stored state), --feature NAME=VALUE (repeated) or --file REQUEST.json");
            }
            // No input: the server scores the customer from their stored state.
        } else {
            req.input = Some(pb::score_request::Input::Features(pb::Features {
                names,
                values,
            }));
        }
    }
    if let Some(id) = &a.customer_id {
        req.customer_id = id.clone();
    }
    req.as_of = as_of.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 });
    Ok(req)
}

pub async fn score(a: ScoreArgs, json: bool) -> anyhow::Result<()> {
    let req = a.server.request(request(&a)?)?;
    let mut client = ScoringClient::new(a.server.connect().await?);
    let r = client
        .score(req)
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    if json {
        println!("{}", serde_json::to_string_pretty(&response_json(&r))?);
        return Ok(());
    }
    print!("{}", response_text(&r));
    Ok(())
}

fn date(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .map(|t| crate::time::fmt_day(t.seconds))
        .unwrap_or_default()
}

fn reasons_json(rs: &[pb::Reason], clv: bool) -> Vec<serde_json::Value> {
    rs.iter()
        .map(|x| {
            let (key, v) = if clv {
                ("clv_contribution", x.clv_contribution)
            } else {
                ("churn_contribution", x.churn_contribution)
            };
            serde_json::json!({"feature": x.feature, key: v, "text": x.text})
        })
        .collect()
}

fn response_json(r: &pb::ScoreResponse) -> serde_json::Value {
    serde_json::json!({
        "customer_id": r.customer_id,
        "churn_probability": r.churn_probability,
        "clv": r.clv,
        "horizon_days": r.horizon_days,
        "segment": r.segment,
        "segment_reason": r.segment_reason,
        "typical_gap_days": r.typical_gap_days,
        "expected_next_purchase": date(&r.expected_next_purchase),
        "days_overdue": r.days_overdue,
        "overdue_percentile": r.overdue_percentile,
        "contact_from": date(&r.contact_from),
        "contact_by": date(&r.contact_by),
        "model_version": r.model_version,
        "experiment": r.experiment,
        "arm": r.arm,
        "holdout": r.holdout,
        "reasons": reasons_json(&r.reasons, false),
        "clv_reasons": reasons_json(&r.clv_reasons, true),
    })
}

fn response_text(r: &pb::ScoreResponse) -> String {
    let mut s = format!("customer          {}\n", r.customer_id);
    if r.holdout {
        s += &format!(
            "experiment        {} (arm {}: held out, no model score)\n",
            r.experiment, r.arm
        );
        return s;
    }
    s += &format!(
        "churn probability {:.3} (no purchase within {} days)\n",
        r.churn_probability, r.horizon_days
    );
    s += &format!(
        "CLV               {:.2} (net spend within {} days)\n",
        r.clv, r.horizon_days
    );
    s += &format!("segment           {}\n", r.segment);
    if !r.segment_reason.is_empty() {
        s += &format!("  because         {}\n", r.segment_reason);
    }
    let days = |d: f64| {
        if d.round() == 1.0 {
            "1 day".to_string()
        } else {
            format!("{d:.0} days")
        }
    };
    s += &format!(
        "rhythm            usually every {}; next purchase due {}; {} overdue; silence longer than {:.0}% of their usual gaps\n",
        days(r.typical_gap_days),
        date(&r.expected_next_purchase),
        days(r.days_overdue),
        100.0 * r.overdue_percentile
    );
    s += &format!(
        "contact window    {} to {}\n",
        date(&r.contact_from),
        date(&r.contact_by)
    );
    s += &format!("model version     {}\n", r.model_version);
    if !r.out_of_range.is_empty() {
        s += &format!(
            "out of range      {} (outside what the version was fitted on)\n",
            r.out_of_range.join(", ")
        );
    }
    if !r.arm.is_empty() {
        s += &format!("experiment        {} (arm {})\n", r.experiment, r.arm);
    }
    for x in &r.reasons {
        s += &format!("churn reason      {}\n", x.text);
    }
    for x in &r.clv_reasons {
        s += &format!("CLV reason        {}\n", x.text);
    }
    s
}

#[derive(Args, Debug)]
pub struct DriftArgs {
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Prints the served version's drift: every feature's and score's PSI, then the segments.
pub async fn drift(a: DriftArgs, json: bool) -> anyhow::Result<()> {
    let channel = a.server.connect().await?;
    let r = ScoringClient::new(channel)
        .drift(a.server.request(pb::DriftRequest {})?)
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    if json {
        let out = serde_json::json!({
            "model_version": r.model_version,
            "profiled": r.profiled,
            "rows": r.rows,
            "window_seconds": r.window_seconds,
            "distributions": r.distributions.iter().map(|d| serde_json::json!({
                "name": d.name, "kind": d.kind, "psi": d.psi, "reading": crate::drift::reading(d.psi, r.rows),
            })).collect::<Vec<_>>(),
            "segments": r.segments.iter().map(|s| serde_json::json!({
                "segment": s.segment, "share": s.share, "training_share": s.training_share,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if !r.profiled {
        println!(
            "{}: fitted before training profiles; nothing to compare with",
            r.model_version
        );
        return Ok(());
    }
    println!(
        "{}: {} rows scored in the last {} s, against its training profile",
        r.model_version, r.rows, r.window_seconds
    );
    let rows: Vec<Vec<String>> = r
        .distributions
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                d.kind.clone(),
                format!("{:.3}", d.psi),
                crate::drift::reading(d.psi, r.rows).into(),
            ]
        })
        .collect();
    print!(
        "{}",
        crate::trainer::report::table(&["distribution", "kind", "PSI", "reading"], &rows)
    );
    let rows: Vec<Vec<String>> = r
        .segments
        .iter()
        .map(|s| {
            vec![
                s.segment.clone(),
                format!("{:.1} %", s.share * 100.0),
                format!("{:.1} %", s.training_share * 100.0),
            ]
        })
        .collect();
    print!(
        "{}",
        crate::trainer::report::table(&["segment", "served", "training"], &rows)
    );
    Ok(())
}

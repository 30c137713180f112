//! Flags and output of `loyalscore`: the registry from the command line.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::model::Manifest;
use crate::registry::{AliasRecord, Expect, Move, Registry, RegistryError};
use crate::trainer::report;

#[derive(Parser, Debug)]
#[command(
    name = "loyalscore",
    version,
    about = "Manage loyalscore model versions and aliases"
)]
pub struct Cli {
    /// Registry: a path or URL (file://, s3://bucket/prefix, gs://, az://).
    #[arg(
        long,
        env = "LOYALSCORE_REGISTRY",
        default_value = "models",
        global = true
    )]
    pub registry: String,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log filter; logs go to stderr.
    #[arg(long, env = "LOYALSCORE_LOG", default_value = "warn", global = true)]
    pub log: String,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Published versions.
    #[command(subcommand)]
    Models(ModelsCmd),
    /// Aliases such as production and staging.
    #[command(subcommand)]
    Alias(AliasCmd),
    /// A/B experiments: split an alias's customers between versions.
    #[command(subcommand)]
    Traffic(super::traffic::TrafficCmd),
    /// Score one customer with a running server.
    Score(super::client::ScoreArgs),
    /// Score every customer of a transaction log with a running server (CSV out).
    ScoreLog(super::score_log::ScoreLogArgs),
    /// Load-test a running server (req/s and latency percentiles).
    Bench(super::bench::BenchArgs),
    /// Sample data, a trained version promoted to production, and a server on 127.0.0.1:50051.
    Quickstart(super::train::QuickstartArgs),
}

#[derive(Subcommand, Debug)]
pub enum ModelsCmd {
    /// Every version, newest first, with headline metrics and the aliases on it.
    List,
    /// One version's manifest.
    Show { version: String },
    /// Two versions' metrics and hyper-parameters side by side.
    Diff { a: String, b: String },
}

#[derive(Args, Debug)]
pub struct Who {
    /// Who is acting (default: $USER).
    #[arg(long, env = "LOYALSCORE_ACTOR")]
    pub actor: Option<String>,
    /// Why, for the audit history.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum AliasCmd {
    /// Every alias and where it points.
    List,
    /// Point an alias at a version (compare-and-swap with --expect).
    Set {
        name: String,
        version: String,
        /// The version the alias must point at now, or "none" if it must not exist yet.
        #[arg(long)]
        expect: Option<String>,
        #[command(flatten)]
        who: Who,
    },
    /// Move an alias back to the version it pointed at before its latest move.
    Rollback {
        name: String,
        #[command(flatten)]
        who: Who,
    },
    /// Every move of an alias, oldest first.
    History { name: String },
}

/// Exit code for a lost race or a failed --expect, so scripts can retry.
pub const EXIT_CONFLICT: u8 = 3;

/// Whether an error is a compare-and-swap conflict.
pub fn is_conflict(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<RegistryError>(),
        Some(
            RegistryError::LostRace { .. }
                | RegistryError::ExpectMismatch { .. }
                | RegistryError::TrafficMoved { .. }
        )
    )
}

/// The move for a command whose `--reason` is required (it goes into the audit history).
pub fn reasoned(who: Who) -> anyhow::Result<Move> {
    if who.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        anyhow::bail!("--reason is required: say why, for the audit history");
    }
    Ok(mv(who, ""))
}

pub fn mv(who: Who, default_reason: &str) -> Move {
    Move {
        actor: who
            .actor
            .or_else(|| std::env::var("USER").ok())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "unknown".into()),
        reason: who.reason.unwrap_or_else(|| default_reason.to_string()),
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Cmd::Score(a) = cli.cmd {
        return rt.block_on(super::client::score(a, cli.json));
    }
    if let Cmd::ScoreLog(a) = cli.cmd {
        return super::score_log::run(a, &rt);
    }
    if let Cmd::Bench(a) = cli.cmd {
        return super::bench::runtime(&a)?.block_on(super::bench::run(a, cli.json));
    }
    if let Cmd::Quickstart(a) = cli.cmd {
        return super::train::run_quickstart(a, &rt);
    }
    let reg = Registry::open(&cli.registry)?;
    rt.block_on(async {
        match cli.cmd {
            Cmd::Score(_) | Cmd::ScoreLog(_) | Cmd::Bench(_) | Cmd::Quickstart(_) => {
                unreachable!("handled above")
            }
            Cmd::Traffic(cmd) => super::traffic::run(&reg, cmd, cli.json).await,
            Cmd::Models(ModelsCmd::List) => models_list(&reg, cli.json).await,
            Cmd::Models(ModelsCmd::Show { version }) => {
                let m = reg.manifest(&version).await?;
                if cli.json {
                    println!("{}", String::from_utf8_lossy(&m.to_json()));
                } else {
                    print!("{}", show(&m));
                }
                Ok(())
            }
            Cmd::Models(ModelsCmd::Diff { a, b }) => {
                let (ma, mb) = (reg.manifest(&a).await?, reg.manifest(&b).await?);
                if cli.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&json!({ "a": ma, "b": mb }))?
                    );
                } else {
                    print!("{}", diff(&ma, &mb));
                }
                Ok(())
            }
            Cmd::Alias(AliasCmd::List) => {
                let mut rows = Vec::new();
                for name in reg.aliases().await? {
                    if let Some(r) = reg.alias(&name).await? {
                        rows.push(r);
                    }
                }
                if cli.json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    let table: Vec<Vec<String>> = rows
                        .iter()
                        .map(|r| {
                            vec![
                                r.alias.clone(),
                                r.version.clone(),
                                r.seq.to_string(),
                                r.at.clone(),
                                r.actor.clone(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        render(&["ALIAS", "VERSION", "SEQ", "SINCE", "BY"], &table)
                    );
                }
                Ok(())
            }
            Cmd::Alias(AliasCmd::Set {
                name,
                version,
                expect,
                who,
            }) => {
                let who = reasoned(who)?;
                let expect = expect.as_deref().map_or(Expect::Any, Expect::parse);
                let r = reg.set_alias(&name, &version, &expect, &who).await?;
                print_move(&r, cli.json)
            }
            Cmd::Alias(AliasCmd::Rollback { name, who }) => {
                let r = reg.rollback_alias(&name, &mv(who, "rollback")).await?;
                print_move(&r, cli.json)
            }
            Cmd::Alias(AliasCmd::History { name }) => {
                let h = reg.alias_history(&name).await?;
                if h.is_empty() {
                    return Err(RegistryError::AliasNotFound(name).into());
                }
                if cli.json {
                    println!("{}", serde_json::to_string_pretty(&h)?);
                } else {
                    let table: Vec<Vec<String>> = h
                        .iter()
                        .map(|r| {
                            vec![
                                r.seq.to_string(),
                                r.at.clone(),
                                r.actor.clone(),
                                r.action.clone(),
                                r.previous.clone().unwrap_or_else(|| "-".into()),
                                r.version.clone(),
                                r.reason.clone(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        render(
                            &["SEQ", "AT", "ACTOR", "ACTION", "FROM", "TO", "REASON"],
                            &table
                        )
                    );
                }
                Ok(())
            }
        }
    })
}

fn print_move(r: &AliasRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        println!(
            "{}: {} -> {} (move {}, {} by {})",
            r.alias,
            r.previous.as_deref().unwrap_or("none"),
            r.version,
            r.seq,
            r.action,
            r.actor
        );
    }
    Ok(())
}

async fn models_list(reg: &Registry, json: bool) -> anyhow::Result<()> {
    let listing = reg.list_versions().await.context("listing versions")?;
    for (id, why) in &listing.broken {
        eprintln!("warning: version {id} is unreadable: {why}");
    }
    let versions = listing.versions;
    let mut on: std::collections::HashMap<String, Vec<String>> = Default::default();
    for name in reg.aliases().await? {
        if let Some(r) = reg.alias(&name).await? {
            on.entry(r.version).or_default().push(name);
        }
    }
    if json {
        let rows: Vec<_> = versions
            .iter()
            .map(|m| {
                json!({
                    "version": m.version,
                    "created_at": m.created_at,
                    "aliases": on.get(&m.version).cloned().unwrap_or_default(),
                    "split": m.split.method,
                    "churn_roc_auc": m.metrics.churn.roc_auc,
                    "churn_baseline_roc_auc": m.metrics.churn_baseline.roc_auc,
                    "clv_spearman": m.metrics.clv.spearman,
                    "clv_baseline_spearman": m.metrics.clv_baseline.spearman,
                    "beats_baselines": m.beats_baselines,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let table: Vec<Vec<String>> = versions
        .iter()
        .map(|m| {
            vec![
                m.version.clone(),
                m.created_at.clone(),
                format!(
                    "{:.4} ({:.4})",
                    m.metrics.churn.roc_auc, m.metrics.churn_baseline.roc_auc
                ),
                format!(
                    "{:.4} ({:.4})",
                    m.metrics.clv.spearman, m.metrics.clv_baseline.spearman
                ),
                m.split.method.clone(),
                on.get(&m.version).map(|a| a.join(",")).unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        render(
            &[
                "VERSION",
                "CREATED",
                "CHURN AUC (BASE)",
                "CLV SPEARMAN (BASE)",
                "SPLIT",
                "ALIASES"
            ],
            &table
        )
    );
    Ok(())
}

fn show(m: &Manifest) -> String {
    let mut s = format!(
        "version     {}\ncreated     {}\ntrainer     {} (commit {})\ndata        {} (sha256 {}, {} rows read, {} rejected, {} customers, {} to {})\n",
        m.version,
        m.created_at,
        m.trainer.version,
        m.trainer.git_commit.as_deref().unwrap_or("unknown"),
        m.data.source,
        &m.data.sha256[..m.data.sha256.len().min(12)],
        m.data.rows_read,
        m.data.rows_rejected,
        m.data.customers,
        m.data.first_purchase,
        m.data.last_purchase
    );
    s.push_str(&format!(
        "schema      v{} ({} features)\nbaselines   {}\n",
        m.feature_schema.version,
        m.feature_schema.names.len(),
        if m.beats_baselines {
            "beaten"
        } else {
            "NOT beaten (published with --force)"
        }
    ));
    for f in &m.files {
        s.push_str(&format!(
            "file        {} {} bytes sha256 {}\n",
            f.name, f.bytes, f.sha256
        ));
    }
    s.push_str(&report::version_summary(m));
    s
}

fn diff(a: &Manifest, b: &Manifest) -> String {
    let f = |v: f64| format!("{v:.4}");
    let depth = |d: Option<u16>| d.map_or("none".to_string(), |d| d.to_string());
    let (ma, mb) = (&a.metrics, &b.metrics);
    let rows: Vec<(&str, String, String)> = vec![
        ("created", a.created_at.clone(), b.created_at.clone()),
        ("split", a.split.method.clone(), b.split.method.clone()),
        (
            "validation as of",
            a.split.validation_as_of.clone(),
            b.split.validation_as_of.clone(),
        ),
        (
            "horizon days",
            a.split.horizon_days.to_string(),
            b.split.horizon_days.to_string(),
        ),
        (
            "training rows",
            a.split.train_rows.to_string(),
            b.split.train_rows.to_string(),
        ),
        (
            "data sha256",
            a.data.sha256[..12.min(a.data.sha256.len())].to_string(),
            b.data.sha256[..12.min(b.data.sha256.len())].to_string(),
        ),
        ("churn ROC-AUC", f(ma.churn.roc_auc), f(mb.churn.roc_auc)),
        ("churn PR-AUC", f(ma.churn.pr_auc), f(mb.churn.pr_auc)),
        ("churn Brier", f(ma.churn.brier), f(mb.churn.brier)),
        ("churn log-loss", f(ma.churn.log_loss), f(mb.churn.log_loss)),
        (
            "churn top-decile lift",
            f(ma.churn.top_decile_lift),
            f(mb.churn.top_decile_lift),
        ),
        (
            "90-day rule ROC-AUC",
            f(ma.churn_baseline.roc_auc),
            f(mb.churn_baseline.roc_auc),
        ),
        ("CLV MAE", f(ma.clv.mae), f(mb.clv.mae)),
        ("CLV RMSE", f(ma.clv.rmse), f(mb.clv.rmse)),
        ("CLV Spearman", f(ma.clv.spearman), f(mb.clv.spearman)),
        (
            "CLV normalised Gini",
            f(ma.clv.normalized_gini),
            f(mb.clv.normalized_gini),
        ),
        (
            "CLV top-decile capture",
            f(ma.clv.top_decile_capture),
            f(mb.clv.top_decile_capture),
        ),
        (
            "last-H Spearman",
            f(ma.clv_baseline.spearman),
            f(mb.clv_baseline.spearman),
        ),
        (
            "churn trees",
            a.hyperparameters.churn.n_trees.to_string(),
            b.hyperparameters.churn.n_trees.to_string(),
        ),
        (
            "churn max_depth",
            depth(a.hyperparameters.churn.max_depth),
            depth(b.hyperparameters.churn.max_depth),
        ),
        (
            "churn min_samples_leaf",
            a.hyperparameters.churn.min_samples_leaf.to_string(),
            b.hyperparameters.churn.min_samples_leaf.to_string(),
        ),
        (
            "CLV trees",
            a.hyperparameters.clv.n_trees.to_string(),
            b.hyperparameters.clv.n_trees.to_string(),
        ),
        (
            "CLV max_depth",
            depth(a.hyperparameters.clv.max_depth),
            depth(b.hyperparameters.clv.max_depth),
        ),
        (
            "CLV min_samples_leaf",
            a.hyperparameters.clv.min_samples_leaf.to_string(),
            b.hyperparameters.clv.min_samples_leaf.to_string(),
        ),
        (
            "seed",
            a.hyperparameters.churn.seed.to_string(),
            b.hyperparameters.churn.seed.to_string(),
        ),
    ];
    let table: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(k, x, y)| {
            let mark = if x == y { "" } else { "*" };
            vec![k.to_string(), x, y, mark.to_string()]
        })
        .collect();
    render(&["", &a.version, &b.version, ""], &table)
}

pub use crate::trainer::report::table as render;

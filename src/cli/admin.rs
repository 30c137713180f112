//! Flags and output of `loyalscore`: the registry from the command line.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::flags::{LogArgs, RegistryArgs};
use crate::model::Manifest;
use crate::registry::{AliasRecord, CorruptRecord, Expect, Move, Registry, RegistryError};
use crate::trainer::report;

#[derive(Parser, Debug)]
#[command(
    name = "loyalscore",
    version,
    about = "Manage loyalscore model versions and aliases"
)]
pub struct Cli {
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub log: LogArgs,
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
    /// Ask a running server's health service (exit 0 when SERVING): a probe for images
    /// without a shell.
    Health(super::client::HealthArgs),
    /// How far what a running server scored in the last hour has moved from its version's
    /// training profile: the population stability index of every feature and both scores.
    Drift(super::client::DriftArgs),
    /// Score every customer of a transaction log with a running server (CSV out).
    ScoreLog(super::score_log::ScoreLogArgs),
    /// Live customer state: load a log, show a customer, erase one (GDPR).
    #[command(subcommand)]
    State(super::state::StateCmd),
    /// Purchases onto the Kafka topic the server consumes; the segment changes it published.
    #[command(subcommand)]
    Kafka(super::kafka::KafkaCmd),
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
    Show {
        /// The version id (as `models list` prints it).
        version: String,
    },
    /// Two versions' metrics and hyper-parameters side by side.
    Diff {
        /// The first version id (left column).
        a: String,
        /// The second version id (right column).
        b: String,
    },
    /// A version's training report as one self-contained HTML file (plots inline, nothing
    /// fetched), or two versions side by side.
    Report {
        /// The version id.
        version: String,
        /// A second version drawn beside it (in every chart and table).
        #[arg(long)]
        against: Option<String>,
        /// Where to write the HTML file.
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
pub struct Who {
    /// Who is acting, for the audit history (default: $USER).
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
        /// The alias to move (production, staging, ...).
        name: String,
        /// The version id it should point at.
        version: String,
        /// The version the alias must point at now, or "none" if it must not exist yet.
        #[arg(long)]
        expect: Option<String>,
        #[command(flatten)]
        who: Who,
    },
    /// Move an alias back to the version it pointed at before its latest move.
    Rollback {
        /// The alias to move back.
        name: String,
        #[command(flatten)]
        who: Who,
    },
    /// Every move of an alias, oldest first (corrupt records shown as such).
    History {
        /// The alias whose moves to list.
        name: String,
    },
    /// Supersede corrupt records on top of an alias with a new record (history is kept).
    Repair {
        /// The alias to repair.
        name: String,
        /// The version the new record points at (default: the last readable record's).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        who: Who,
    },
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

/// Who acts and why; the registry refuses a move that needs a reason and has none.
pub fn mv(who: Who) -> Move {
    Move {
        actor: actor(who.actor),
        reason: who.reason.unwrap_or_default(),
    }
}

/// Who the audit history names: `--actor`, else the login (`$USER`, `$LOGNAME`), else, as in
/// a container where neither is set, the host (`$HOSTNAME` or the kernel's host name: a pod
/// name on Kubernetes), so a move is never signed "unknown" when something better is known.
pub fn actor(explicit: Option<String>) -> String {
    let env = |k: &str| std::env::var(k).ok();
    let host = || {
        env("HOSTNAME").or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
    };
    explicit
        .into_iter()
        .chain(env("USER"))
        .chain(env("LOGNAME"))
        .chain(host().map(|h| format!("host:{h}")))
        .find(|a| !a.trim().is_empty() && a != "host:")
        .unwrap_or_else(|| "unknown".into())
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let json = cli.json;
    // Every registry command reads first: a folder that does not exist is a mistake to
    // report, not an empty registry to list (or a path to create).
    let open = || -> anyhow::Result<Registry> {
        let reg = Registry::open(&cli.registry.registry)?;
        reg.must_exist()?;
        Ok(reg)
    };
    match cli.cmd {
        Cmd::Score(a) => rt.block_on(super::client::score(a, json)),
        Cmd::Health(a) => rt.block_on(super::client::health(a, json)),
        Cmd::Drift(a) => rt.block_on(super::client::drift(a, json)),
        Cmd::ScoreLog(a) => super::score_log::run(a, &rt),
        Cmd::Bench(a) => super::bench::runtime(&a)?.block_on(super::bench::run(a, json)),
        Cmd::Quickstart(a) => super::train::run_quickstart(a, &cli.registry, &rt),
        Cmd::Traffic(cmd) => rt.block_on(super::traffic::run(&open()?, cmd, json)),
        Cmd::State(cmd) => super::state::run(cmd, &cli.registry.registry, json, &rt),
        Cmd::Kafka(cmd) => super::kafka::run(cmd, &rt),
        Cmd::Models(cmd) => rt.block_on(models(&open()?, cmd, json)),
        Cmd::Alias(cmd) => rt.block_on(alias(&open()?, cmd, json)),
    }
}

async fn models(reg: &Registry, cmd: ModelsCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        ModelsCmd::List => models_list(reg, json).await,
        ModelsCmd::Show { version } => {
            let m = reg.manifest(&version).await?;
            if json {
                println!("{}", String::from_utf8_lossy(&m.to_json()?));
            } else {
                print!("{}", show(&m));
            }
            Ok(())
        }
        ModelsCmd::Report {
            version,
            against,
            out,
        } => models_report(reg, &version, against.as_deref(), &out).await,
        ModelsCmd::Diff { a, b } => {
            let (ma, mb) = (reg.manifest(&a).await?, reg.manifest(&b).await?);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "a": ma, "b": mb }))?
                );
            } else {
                print!("{}", diff(&ma, &mb));
            }
            Ok(())
        }
    }
}

/// A version's manifest and its evaluation (absent in versions made before it).
async fn manifest_and_evaluation(
    reg: &Registry,
    version: &str,
) -> anyhow::Result<(crate::model::Manifest, Option<crate::model::Evaluation>)> {
    let m = reg.manifest(version).await?;
    let e = match reg.file(&m, crate::model::EVALUATION_FILE).await? {
        Some(bytes) => Some(crate::model::Evaluation::from_json(&bytes)?),
        None => None,
    };
    Ok((m, e))
}

async fn models_report(
    reg: &Registry,
    version: &str,
    against: Option<&str>,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let (m, e) = manifest_and_evaluation(reg, version).await?;
    let other = match against {
        Some(b) => Some(manifest_and_evaluation(reg, b).await?),
        None => None,
    };
    fn side(
        v: &(crate::model::Manifest, Option<crate::model::Evaluation>),
    ) -> crate::report::Side<'_> {
        crate::report::Side {
            manifest: &v.0,
            evaluation: v.1.as_ref(),
        }
    }
    let first = (m, e);
    let html = crate::report::version_page(side(&first), other.as_ref().map(side))?;
    std::fs::write(out, html).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

async fn alias(reg: &Registry, cmd: AliasCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        AliasCmd::List => alias_list(reg, json).await,
        AliasCmd::Set {
            name,
            version,
            expect,
            who,
        } => {
            let expect = expect.as_deref().map_or(Expect::Any, Expect::parse);
            let r = reg.set_alias(&name, &version, &expect, &mv(who)).await?;
            print_move(&r, json)
        }
        AliasCmd::Rollback { name, who } => {
            let r = reg.rollback_alias(&name, &mv(who)).await?;
            print_move(&r, json)
        }
        AliasCmd::History { name } => alias_history(reg, &name, json).await,
        AliasCmd::Repair { name, to, who } => {
            let r = reg.repair_alias(&name, to.as_deref(), &mv(who)).await?;
            print_move(&r, json)
        }
    }
}

/// Says on stderr which records of `alias` are skipped as corrupt, and how to repair them.
fn warn_corrupt(alias: &str, corrupt: &[CorruptRecord]) {
    for c in corrupt {
        eprintln!(
            "warning: alias {alias} record {} is corrupt and skipped ({}); `loyalscore alias repair {alias}` supersedes it",
            c.seq, c.reason
        );
    }
}

/// Records as JSON (`--json`) or as a table with one row per record.
pub fn print_records<T: serde::Serialize>(
    json: bool,
    records: &[T],
    header: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(records)?);
    } else {
        let rows: Vec<Vec<String>> = records.iter().map(cells).collect();
        print!("{}", render(header, &rows));
    }
    Ok(())
}

async fn alias_list(reg: &Registry, json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for name in reg.aliases().await? {
        let state = reg.alias_state(&name).await?;
        warn_corrupt(&name, &state.corrupt);
        rows.extend(state.current);
    }
    print_records(
        json,
        &rows,
        &["ALIAS", "VERSION", "SEQ", "SINCE", "BY"],
        |r| {
            vec![
                r.alias.clone(),
                r.version.clone(),
                r.seq.to_string(),
                r.at.clone(),
                r.actor.clone(),
            ]
        },
    )
}

async fn alias_history(reg: &Registry, name: &str, json: bool) -> anyhow::Result<()> {
    let journal = reg.alias_journal(name).await?;
    warn_corrupt(name, &journal.corrupt);
    let h = journal.records;
    if h.is_empty() && journal.corrupt.is_empty() {
        return Err(RegistryError::AliasNotFound(name.to_string()).into());
    }
    print_records(
        json,
        &h,
        &["SEQ", "AT", "ACTOR", "ACTION", "FROM", "TO", "REASON"],
        |r| {
            vec![
                r.seq.to_string(),
                r.at.clone(),
                r.actor.clone(),
                r.action.clone(),
                r.previous.clone().unwrap_or_else(|| "-".into()),
                r.version.clone(),
                r.reason.clone(),
            ]
        },
    )
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
    s.push_str(&features_table(m));
    s.push_str(&report::version_summary(m));
    s
}

/// The schema's features in order, with the range each had on the fitting rows: what a
/// caller sending features by name needs, and what `out_of_range` is judged against.
fn features_table(m: &Manifest) -> String {
    let rows: Vec<Vec<String>> = m
        .feature_schema
        .names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let range = m.feature_ranges.get(i).filter(|r| &r.name == name);
            let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
            vec![
                i.to_string(),
                name.clone(),
                cell(range.map(|r| r.min)),
                cell(range.map(|r| r.max)),
            ]
        })
        .collect();
    format!(
        "features (in schema order; range on the fitting rows):\n{}",
        report::table(&["#", "FEATURE", "MIN", "MAX"], &rows)
    )
}

// Long: one line per compared figure, in the order the table prints them.
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

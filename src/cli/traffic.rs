//! `loyalscore traffic`: start, inspect, stop and audit an alias's A/B experiment.

use clap::Subcommand;

use super::admin::{mv, print_records, render, Who};
use crate::flags::AliasArgs;
use crate::registry::{Experiment, Registry, RegistryError, TrafficRecord, HOLDOUT_ARM};
use crate::routing::Arm;

#[derive(Subcommand, Debug)]
pub enum TrafficCmd {
    /// Start or change an experiment: customers split between arms by hash(salt, id).
    Set {
        #[command(flatten)]
        alias: AliasArgs,
        /// Experiment name (reported in every response and exposure).
        #[arg(long)]
        experiment: String,
        /// An arm, as NAME=VERSION:WEIGHT (repeat for each arm).
        #[arg(long = "arm", required = true, value_parser = parse_arm)]
        arms: Vec<Arm>,
        /// A version to score in the shadow of the answer, only measured (repeatable).
        #[arg(long)]
        shadow: Vec<String>,
        /// Salt of the assignment hash; a new salt reshuffles customers. Default: the name.
        #[arg(long)]
        salt: Option<String>,
        /// Share of customers, in [0, 1), held out of model scoring.
        #[arg(long, default_value_t = 0.0)]
        holdout: f64,
        /// Compare-and-swap: the number of the traffic record you last saw (0: none yet).
        #[arg(long)]
        expect_seq: Option<u64>,
        #[command(flatten)]
        who: Who,
    },
    /// The experiment running on the alias, if any.
    Show {
        #[command(flatten)]
        alias: AliasArgs,
    },
    /// Stop the experiment: all traffic follows the alias again.
    Stop {
        #[command(flatten)]
        alias: AliasArgs,
        /// Compare-and-swap: the number of the traffic record you last saw.
        #[arg(long)]
        expect_seq: Option<u64>,
        #[command(flatten)]
        who: Who,
    },
    /// Every change of the alias's traffic, oldest first.
    History {
        #[command(flatten)]
        alias: AliasArgs,
    },
}

/// `NAME=VERSION:WEIGHT`.
fn parse_arm(s: &str) -> Result<Arm, String> {
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VERSION:WEIGHT (no '=')"))?;
    let (version, weight) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not NAME=VERSION:WEIGHT (no ':WEIGHT')"))?;
    let weight = weight
        .parse::<u32>()
        .map_err(|_| format!("{s:?}: weight {weight:?} is not a whole number"))?;
    if name.is_empty() || version.is_empty() {
        return Err(format!("{s:?}: the arm name and version must not be empty"));
    }
    Ok(Arm {
        name: name.to_string(),
        version: version.to_string(),
        weight,
    })
}

pub async fn run(reg: &Registry, cmd: TrafficCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        TrafficCmd::Set {
            alias,
            experiment,
            arms,
            shadow,
            salt,
            holdout,
            expect_seq,
            who,
        } => {
            let e = Experiment {
                salt: salt.unwrap_or_default(),
                name: experiment,
                arms,
                shadow,
                holdout,
            };
            let r = reg
                .set_traffic(&alias.alias, e, expect_seq, &mv(who))
                .await?;
            print_record(&r, json)
        }
        TrafficCmd::Stop {
            alias,
            expect_seq,
            who,
        } => {
            let r = reg.stop_traffic(&alias.alias, expect_seq, &mv(who)).await?;
            print_record(&r, json)
        }
        TrafficCmd::Show { alias } => {
            let r = reg.traffic(&alias.alias).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            match r {
                Some(r) => print_record(&r, false),
                None => {
                    println!(
                        "{}: no experiment has ever run; all traffic follows the alias",
                        alias.alias
                    );
                    Ok(())
                }
            }
        }
        TrafficCmd::History { alias } => history(reg, &alias.alias, json).await,
    }
}

async fn history(reg: &Registry, alias: &str, json: bool) -> anyhow::Result<()> {
    let h = reg.traffic_history(alias).await?;
    if h.is_empty() {
        return Err(RegistryError::NoExperiment(alias.to_string()).into());
    }
    print_records(
        json,
        &h,
        &["SEQ", "AT", "ACTOR", "ACTION", "EXPERIMENT", "REASON"],
        |r| {
            vec![
                r.seq.to_string(),
                r.at.clone(),
                r.actor.clone(),
                r.action.clone(),
                r.experiment.as_ref().map_or("-".into(), summary),
                r.reason.clone(),
            ]
        },
    )
}

/// `churn-v2: control=v1:90 challenger=v2:10 shadow=v3 holdout=5%`.
fn summary(e: &Experiment) -> String {
    let mut s = e.name.clone() + ":";
    for a in &e.arms {
        s += &format!(" {}={}:{}", a.name, a.version, a.weight);
    }
    for v in &e.shadow {
        s += &format!(" shadow={v}");
    }
    if e.holdout > 0.0 {
        s += &format!(" holdout={}%", e.holdout * 100.0);
    }
    s
}

fn print_record(r: &TrafficRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!(
        "{}: traffic record {} ({} by {} at {}: {})",
        r.alias, r.seq, r.action, r.actor, r.at, r.reason
    );
    let Some(e) = &r.experiment else {
        println!("no experiment running; all traffic follows the alias");
        return Ok(());
    };
    println!("experiment {} (salt {:?})", e.name, e.salt);
    let total: f64 = e.arms.iter().map(|a| f64::from(a.weight)).sum();
    let scored = 1.0 - e.holdout;
    let mut rows: Vec<Vec<String>> = e
        .arms
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.version.clone(),
                a.weight.to_string(),
                format!("{:.1}%", 100.0 * scored * f64::from(a.weight) / total),
            ]
        })
        .collect();
    if e.holdout > 0.0 {
        rows.push(vec![
            HOLDOUT_ARM.into(),
            "-".into(),
            "-".into(),
            format!("{:.1}%", 100.0 * e.holdout),
        ]);
    }
    print!(
        "{}",
        render(&["ARM", "VERSION", "WEIGHT", "CUSTOMERS"], &rows)
    );
    for v in &e.shadow {
        println!("shadow: {v} (scored off the request path, only measured)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_arm;

    #[test]
    fn arms_parse_and_bad_ones_say_what_is_wrong() {
        let a = parse_arm("control=20240101-x:90").unwrap();
        assert_eq!(
            (a.name.as_str(), a.version.as_str(), a.weight),
            ("control", "20240101-x", 90)
        );
        assert!(parse_arm("control:90").unwrap_err().contains("no '='"));
        assert!(parse_arm("control=v1")
            .unwrap_err()
            .contains("no ':WEIGHT'"));
        assert!(parse_arm("control=v1:ten")
            .unwrap_err()
            .contains("not a whole number"));
        assert!(parse_arm("=v1:5")
            .unwrap_err()
            .contains("must not be empty"));
    }
}

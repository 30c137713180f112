//! `loyalscore kafka`: put purchases on the topic the server consumes (checked as the server
//! reads them, so a bad line is refused with its number here rather than skipped there), and
//! read the segment changes it published.

use std::io::BufRead;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::stream::kafka::{client, read_topic, KafkaClientArgs};
use crate::stream::{purchase, SegmentChange};

#[derive(Subcommand, Debug)]
pub enum KafkaCmd {
    /// Produce purchase messages (JSON lines: event_id, customer_id, timestamp, amount, and
    /// optionally points_earned, points_redeemed, channel, quantity), keyed by customer id.
    /// Every line is checked first; none is sent if one is bad.
    Produce {
        #[command(flatten)]
        client: KafkaClientArgs,
        /// The purchase topic.
        #[arg(long, default_value = "purchases")]
        topic: String,
        /// JSON-lines file of purchases; "-" for standard input.
        #[arg(long, default_value = "-")]
        file: String,
    },
    /// Print every segment change on the topic, oldest first within each customer (JSON
    /// lines), then stop.
    Changes {
        #[command(flatten)]
        client: KafkaClientArgs,
        /// The segment-change topic.
        #[arg(long, default_value = "segment-changes")]
        topic: String,
    },
}

pub fn run(cmd: KafkaCmd, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    match cmd {
        KafkaCmd::Produce {
            client: c,
            topic,
            file,
        } => {
            let lines = read_purchases(&file)?;
            let producer: FutureProducer = client(&c)?.create()?;
            let n = rt.block_on(produce(&producer, &topic, &lines))?;
            eprintln!("produced {n} purchase messages to {topic}");
            Ok(())
        }
        KafkaCmd::Changes { client: c, topic } => {
            let config = client(&c)?;
            let mut out = Vec::new();
            read_topic(config, "loyalscore-cli", &topic, |_, payload| {
                if let Some(p) = payload {
                    out.push(p.to_vec());
                }
            })?;
            for p in out {
                let c: SegmentChange = serde_json::from_slice(&p)
                    .context("a message on the topic is not a segment change")?;
                println!("{}", serde_json::to_string(&c)?);
            }
            Ok(())
        }
    }
}

/// The file's purchases as (customer id, line), each checked as the consumer will read it.
fn read_purchases(file: &str) -> anyhow::Result<Vec<(String, String)>> {
    let reader: Box<dyn BufRead> = if file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("{file}: cannot open"))?,
        ))
    };
    let now = chrono::Utc::now().timestamp();
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{file}: line {}: cannot read", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let e = purchase(line.as_bytes(), now)
            .map_err(|e| anyhow::anyhow!("{file}: line {}: {e}", i + 1))?;
        out.push((e.customer_id, line));
    }
    Ok(out)
}

async fn produce(
    producer: &FutureProducer,
    topic: &str,
    lines: &[(String, String)],
) -> anyhow::Result<usize> {
    for chunk in lines.chunks(1000) {
        let sends = chunk.iter().map(|(key, line)| {
            producer.send(
                FutureRecord::to(topic).key(key).payload(line),
                Duration::from_secs(30),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e)
                .context("the broker refused a message")?;
        }
    }
    Ok(lines.len())
}

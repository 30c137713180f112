//! The Kafka transport: a consumer-group member that applies the purchase topic to the live
//! state and publishes segment changes, and a daily re-score of every customer the change
//! topic has named.
//!
//! Delivery: a batch of messages is applied to the state store, its changes published, and
//! only then are its offsets committed. A crash in between replays the batch to whichever
//! member takes the partitions, and the event ids make the replay a no-op (duplicates, or
//! late: older than the customer's lateness window, hence long folded in). Purchases are
//! keyed by customer id, so one customer's messages stay in order on one partition.
//!
//! The re-score needs customer ids, and the state store holds none in clear (it keys by a
//! salted hash). The change topic has them: every customer's first judgement is published
//! (`from: null`), so reading the topic's keys finds everyone the consumer has seen.
//!
//! librdkafka (through `rdkafka`) is the client: consumer groups with committed offsets are
//! what this needs, and rskafka, the pure-Rust one, has no groups.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};
use tokio::sync::watch;

use super::{changes, purchase, SegmentChange, When};
use crate::scoring::Model;
use crate::state::{CustomerStore, Event, Outcome, StateError};

/// The Kafka settings of `loyalscore-serve`; off unless `--kafka-brokers` is set.
#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    #[command(flatten)]
    pub client: KafkaClientArgs,
    /// Consumer group of the purchase consumer: replicas in one group share the partitions.
    #[arg(long, env = "LOYALSCORE_KAFKA_GROUP", default_value = "loyalscore")]
    pub kafka_group: String,
    /// Topic of purchase messages (JSON: event_id, customer_id, timestamp, amount, and
    /// optionally points_earned, points_redeemed, channel, quantity), keyed by customer id.
    #[arg(
        long,
        env = "LOYALSCORE_KAFKA_PURCHASE_TOPIC",
        default_value = "purchases"
    )]
    pub kafka_purchase_topic: String,
    /// Topic segment changes are published to, keyed by customer id; "off" publishes none.
    #[arg(
        long,
        env = "LOYALSCORE_KAFKA_SEGMENT_TOPIC",
        default_value = "segment-changes"
    )]
    pub kafka_segment_topic: String,
    /// Seconds between re-scores of every customer at the current time (silence moves
    /// segments too); 0: none.
    #[arg(long, env = "LOYALSCORE_KAFKA_RESCORE_SECS", default_value_t = 86_400)]
    pub kafka_rescore_secs: u64,
    /// Most purchase messages applied, and committed, together.
    #[arg(long, env = "LOYALSCORE_KAFKA_BATCH", default_value_t = 500)]
    pub kafka_batch: usize,
}

/// Where the brokers are and how to reach them: the flags every Kafka client here shares
/// (the server, `loyalscore kafka`).
#[derive(Args, Debug, Clone, Default)]
pub struct KafkaClientArgs {
    /// Kafka bootstrap servers (host:port,host:port). For the server: consume purchases from
    /// --kafka-purchase-topic into the live state; unset, no Kafka.
    #[arg(long, env = "LOYALSCORE_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// A librdkafka setting for every Kafka client, KEY=VALUE (repeatable; in the environment,
    /// separated by ';'): security.protocol=SASL_SSL, sasl.mechanism, sasl.username, ...
    #[arg(long, env = "LOYALSCORE_KAFKA_OPTIONS", value_delimiter = ';', hide_env_values = true, value_parser = option)]
    pub kafka_option: Vec<String>,
}

/// A KEY=VALUE librdkafka setting.
fn option(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((k, _)) if !k.trim().is_empty() => Ok(s.to_string()),
        _ => Err(format!("{s:?} is not KEY=VALUE (a librdkafka setting)")),
    }
}

impl KafkaArgs {
    pub fn off() -> Self {
        KafkaArgs {
            client: KafkaClientArgs::default(),
            kafka_group: "loyalscore".into(),
            kafka_purchase_topic: "purchases".into(),
            kafka_segment_topic: "segment-changes".into(),
            kafka_rescore_secs: 86_400,
            kafka_batch: 500,
        }
    }

    fn segment_topic(&self) -> Option<&str> {
        Some(self.kafka_segment_topic.as_str()).filter(|t| !t.eq_ignore_ascii_case("off"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("kafka: {0}")]
    Config(String),
}

/// The stream's metrics, registered in the server's registry.
pub struct StreamMetrics {
    /// Purchase messages by outcome: applied, duplicate, late, rejected, malformed.
    pub messages: prometheus::IntCounterVec,
    /// Messages on this member's partitions of the purchase topic after its committed
    /// offsets; -1 while unknown (no partition assigned yet).
    pub lag: prometheus::IntGauge,
    /// Segment changes by result: published, failed (the broker refused or timed out).
    pub changes: prometheus::IntCounterVec,
    /// Customers judged by the periodic re-score.
    pub rescored: prometheus::IntCounter,
}

impl StreamMetrics {
    pub fn new(registry: &prometheus::Registry) -> Self {
        fn reg<T: prometheus::core::Collector + Clone + 'static>(
            r: &prometheus::Registry,
            c: T,
        ) -> T {
            let _ = r.register(Box::new(c.clone()));
            c
        }
        let vec = |name: &str, help: &str, label: &str| {
            prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), &[label])
                .unwrap_or_else(|e| unreachable!("metric {name}: {e}"))
        };
        let m = StreamMetrics {
            messages: reg(registry, vec(
                "kafka_messages_total",
                "purchase messages from Kafka by outcome (applied, duplicate, late, rejected, malformed)",
                "outcome",
            )),
            lag: reg(registry, prometheus::IntGauge::new(
                "kafka_consumer_lag",
                "purchase messages on this member's partitions after its committed offsets (-1: none assigned yet)",
            ).unwrap_or_else(|e| unreachable!("{e}"))),
            changes: reg(registry, vec(
                "segment_changes_total",
                "segment changes by result (published, failed)",
                "result",
            )),
            rescored: reg(registry, prometheus::IntCounter::new(
                "segment_rescored_total",
                "customers judged by the periodic re-score",
            ).unwrap_or_else(|e| unreachable!("{e}"))),
        };
        // Every series from the start, at 0: a rate over a series that appears at its first
        // event misses that event, and a dashboard shows "no data" rather than none.
        for o in ["applied", "duplicate", "late", "rejected", "malformed"] {
            m.messages.with_label_values(&[o]);
        }
        for r in ["published", "failed"] {
            m.changes.with_label_values(&[r]);
        }
        m.lag.set(-1);
        m
    }
}

/// Reads the consumer lag out of librdkafka's statistics.
struct LagContext {
    lag: prometheus::IntGauge,
}

impl ClientContext for LagContext {
    /// librdkafka's statistics, every second: the sum of the partitions' lags, or -1 while
    /// no partition's lag is known (none assigned yet, or no committed offset to count from).
    fn stats(&self, s: Statistics) {
        let known: Vec<i64> = s
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .collect();
        self.lag.set(if known.is_empty() {
            -1
        } else {
            known.iter().sum()
        });
    }
}

impl ConsumerContext for LagContext {}

/// Where the served model comes from (`None` before one is loaded).
pub type ModelSource = Arc<dyn Fn() -> Option<Arc<Model>> + Send + Sync>;

/// What the stream works with.
pub struct Feed {
    pub args: KafkaArgs,
    pub store: Arc<dyn CustomerStore>,
    pub model: ModelSource,
    /// Seconds an event may trail the customer's latest one.
    pub lateness: i64,
    pub metrics: Arc<StreamMetrics>,
}

/// A librdkafka configuration for the brokers and settings given.
pub fn client(args: &KafkaClientArgs) -> Result<ClientConfig, StreamError> {
    let brokers = args
        .kafka_brokers
        .as_deref()
        .ok_or_else(|| StreamError::Config("no --kafka-brokers".into()))?;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("client.id", "loyalscore");
    for o in &args.kafka_option {
        if let Some((k, v)) = o.split_once('=') {
            c.set(k.trim(), v.trim());
        }
    }
    Ok(c)
}

/// The Kafka clients of a [`Feed`].
pub struct Clients {
    consumer: Arc<StreamConsumer<LagContext>>,
    producer: Option<FutureProducer>,
}

/// Backoff after a failure of the store or the broker, before the same batch is tried again.
const RETRY: Duration = Duration::from_secs(1);

impl Feed {
    /// The consumer (subscribed) and the change producer (unless the change topic is off):
    /// made before the server starts, so a bad setting stops it with the reason. No
    /// connection is made yet.
    pub fn clients(&self) -> Result<Clients, StreamError> {
        let consumer: StreamConsumer<LagContext> = client(&self.args.client)?
            .set("group.id", &self.args.kafka_group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "1000")
            .create_with_context(LagContext {
                lag: self.metrics.lag.clone(),
            })?;
        consumer.subscribe(&[&self.args.kafka_purchase_topic])?;
        let producer = match self.args.segment_topic() {
            Some(_) => Some(client(&self.args.client)?.set("acks", "all").create()?),
            None => None,
        };
        Ok(Clients {
            consumer: Arc::new(consumer),
            producer,
        })
    }

    /// Consumes until `stop` turns true; a broker or store outage is retried, never fatal.
    pub async fn run(self: Arc<Self>, clients: Clients, mut stop: watch::Receiver<bool>) {
        let Clients { consumer, producer } = clients;
        let rescore = match (&producer, self.args.kafka_rescore_secs) {
            (Some(p), secs) if secs > 0 => Some(tokio::spawn(self.clone().rescore_loop(
                p.clone(),
                Duration::from_secs(secs),
                stop.clone(),
            ))),
            _ => None,
        };
        tracing::info!(topic = %self.args.kafka_purchase_topic, group = %self.args.kafka_group, "consuming purchases from Kafka");
        loop {
            let batch = tokio::select! {
                b = self.next_batch(&consumer) => b,
                _ = stop.wait_for(|s| *s) => break,
            };
            if !self
                .handle(&consumer, producer.as_ref(), batch, &mut stop)
                .await
            {
                break;
            }
        }
        if let Some(t) = rescore {
            t.abort();
        }
    }

    /// Waits for a message, then takes what else has arrived, up to `--kafka-batch`.
    async fn next_batch(&self, consumer: &StreamConsumer<LagContext>) -> Vec<OwnedMessage> {
        let mut batch = Vec::new();
        let most = self.args.kafka_batch.max(1);
        while batch.len() < most {
            let next = if batch.is_empty() {
                Some(consumer.recv().await)
            } else {
                tokio::time::timeout(Duration::from_millis(5), consumer.recv())
                    .await
                    .ok()
            };
            match next {
                Some(Ok(m)) => batch.push(m.detach()),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka consumer");
                    if batch.is_empty() {
                        tokio::time::sleep(RETRY).await;
                    } else {
                        break;
                    }
                }
                None => break,
            }
        }
        batch
    }

    /// Applies, publishes, then commits one batch, retrying each step until it succeeds
    /// (the same batch: nothing is skipped past a failure). False once `stop` turns true.
    async fn handle(
        &self,
        consumer: &Arc<StreamConsumer<LagContext>>,
        producer: Option<&FutureProducer>,
        batch: Vec<OwnedMessage>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let events = self.read(&batch);
        let Some(applied) = retry(stop, "apply purchases", || self.apply(&events)).await else {
            return false;
        };
        if let Some(p) = producer {
            let ids: Vec<&str> = applied.iter().map(String::as_str).collect();
            if retry(stop, "publish segment changes", || {
                self.publish_changes(p, &ids, When::AfterLatestPurchase)
            })
            .await
            .is_none()
            {
                return false;
            }
        }
        let offsets = match commit_list(&batch) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "offsets to commit");
                return true;
            }
        };
        tracing::debug!(offsets = ?offsets.to_topic_map(), messages = batch.len(), "committing");
        retry(stop, "commit offsets", || {
            let (c, t) = (consumer.clone(), offsets.clone());
            async move {
                tokio::task::spawn_blocking(move || c.commit(&t, CommitMode::Sync))
                    .await
                    .map_err(|e| StreamError::Config(e.to_string()))?
                    .map_err(StreamError::from)
            }
        })
        .await
        .is_some()
    }

    /// The batch's purchases; malformed messages are counted and logged (where, and what is
    /// wrong; never their content) and skipped.
    fn read(&self, batch: &[OwnedMessage]) -> Vec<Event> {
        let now = chrono::Utc::now().timestamp();
        let mut events = Vec::with_capacity(batch.len());
        for m in batch {
            let read = match m.payload() {
                Some(p) => purchase(p, now),
                None => Err(super::bad("message", "is empty")),
            };
            match read {
                Ok(e) => events.push(e),
                Err(e) => {
                    self.metrics
                        .messages
                        .with_label_values(&["malformed"])
                        .inc();
                    tracing::warn!(partition = m.partition(), offset = m.offset(), error = %e, "purchase message skipped");
                }
            }
        }
        events
    }

    /// Applies the events; the customers any of them changed.
    async fn apply(&self, events: &[Event]) -> Result<Vec<String>, StreamError> {
        let outcomes = self.store.apply(events, self.lateness).await?;
        let mut changed = Vec::new();
        let mut seen = HashSet::new();
        for (e, o) in events.iter().zip(&outcomes) {
            self.metrics.messages.with_label_values(&[o.as_str()]).inc();
            if *o == Outcome::Applied && seen.insert(e.customer_id.as_str()) {
                changed.push(e.customer_id.clone());
            }
        }
        Ok(changed)
    }

    /// Judges the customers and publishes their changes. A change whose mark is replaced but
    /// whose publication fails is counted as failed, not retried: at most once.
    async fn publish_changes(
        &self,
        producer: &FutureProducer,
        ids: &[&str],
        when: When,
    ) -> Result<(), StreamError> {
        if ids.is_empty() {
            return Ok(());
        }
        let Some(model) = (self.model)() else {
            return Err(StreamError::Config("no model version is served yet".into()));
        };
        let found = changes(self.store.as_ref(), &model, ids, when).await?;
        let topic = self.args.segment_topic().unwrap_or_default();
        let sends = found.iter().map(|c| send(producer, topic, c));
        for ok in futures::future::join_all(sends).await {
            let result = if ok { "published" } else { "failed" };
            self.metrics.changes.with_label_values(&[result]).inc();
        }
        Ok(())
    }

    /// Every `every`, judges every customer the change topic names at the current time.
    async fn rescore_loop(
        self: Arc<Self>,
        producer: FutureProducer,
        every: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Err(e) = self.rescore(&producer).await {
                tracing::warn!(error = %e, "segment re-score");
            }
        }
    }

    /// One re-score: the change topic's keys, judged in chunks at the current time.
    pub async fn rescore(&self, producer: &FutureProducer) -> Result<usize, StreamError> {
        let topic = self.args.segment_topic().unwrap_or_default().to_string();
        let config = client(&self.args.client)?;
        let group = format!("{}-rescore", self.args.kafka_group);
        let ids = tokio::task::spawn_blocking(move || {
            let mut ids = HashSet::new();
            read_topic(config, &group, &topic, |key, _| {
                if let Some(k) = key.and_then(|k| std::str::from_utf8(k).ok()) {
                    ids.insert(k.to_string());
                }
            })
            .map(|()| ids)
        })
        .await
        .map_err(|e| StreamError::Config(e.to_string()))??;
        let mut ids: Vec<String> = ids.into_iter().collect();
        ids.sort_unstable();
        let now = chrono::Utc::now().timestamp();
        for chunk in ids.chunks(1000) {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            self.publish_changes(producer, &chunk, When::At(now))
                .await?;
            self.metrics.rescored.inc_by(chunk.len() as u64);
        }
        tracing::info!(customers = ids.len(), "segment re-score done");
        Ok(ids.len())
    }
}

/// Runs `step` until it succeeds, logging the first failure of a run of them; `None` once
/// `stop` turns true.
async fn retry<T, F, Fut>(stop: &mut watch::Receiver<bool>, what: &str, mut step: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StreamError>>,
{
    let mut logged = false;
    loop {
        match step().await {
            Ok(v) => return Some(v),
            Err(e) => {
                if !logged {
                    tracing::warn!(error = %e, "{what} failed; retrying");
                    logged = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = stop.wait_for(|s| *s) => return None,
                }
            }
        }
    }
}

/// Publishes one change keyed by the customer id; whether the broker took it.
async fn send(producer: &FutureProducer, topic: &str, c: &SegmentChange) -> bool {
    let Ok(json) = serde_json::to_vec(c) else {
        return false;
    };
    let record = FutureRecord::to(topic).key(&c.customer_id).payload(&json);
    match producer.send(record, Duration::from_secs(10)).await {
        Ok(_) => true,
        Err((e, _)) => {
            tracing::warn!(error = %e, "segment change not published");
            false
        }
    }
}

/// The offsets to commit after a batch: one past the last message of each partition.
fn commit_list(batch: &[OwnedMessage]) -> Result<TopicPartitionList, StreamError> {
    let mut next: std::collections::BTreeMap<(&str, i32), i64> = Default::default();
    for m in batch {
        let o = next.entry((m.topic(), m.partition())).or_insert(0);
        *o = (*o).max(m.offset() + 1);
    }
    let mut t = TopicPartitionList::new();
    for ((topic, p), o) in next {
        t.add_partition_offset(topic, p, Offset::Offset(o))?;
    }
    Ok(t)
}

/// How long a read of a topic waits for its next message before it gives up.
const SCAN_IDLE: Duration = Duration::from_secs(10);

/// Every message on `topic` as (key, payload), read from the start of each partition to its
/// end as it was when the read began (in order within a partition). Blocking.
pub fn read_topic(
    mut config: ClientConfig,
    group: &str,
    topic: &str,
    mut each: impl FnMut(Option<&[u8]>, Option<&[u8]>),
) -> Result<(), StreamError> {
    let consumer: BaseConsumer = config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let meta = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = meta
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = std::collections::HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
        }
    }
    consumer.assign(&tpl)?;
    while !ends.is_empty() {
        let m = match consumer.poll(SCAN_IDLE) {
            Some(m) => m?,
            None => {
                return Err(StreamError::Config(format!(
                    "the read of {topic} waited {} s for a message",
                    SCAN_IDLE.as_secs()
                )))
            }
        };
        each(m.key(), m.payload());
        if ends
            .get(&m.partition())
            .is_some_and(|&end| m.offset() + 1 >= end)
        {
            ends.remove(&m.partition());
        }
    }
    Ok(())
}

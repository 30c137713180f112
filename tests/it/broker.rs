//! A real Kafka-compatible broker for tests: tansu on a free loopback port, in memory,
//! killed on drop. `scripts/test.sh` installs it once per machine and sets
//! `LOYALSCORE_TANSU`; without it, `tansu` on the PATH.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

pub struct Broker {
    child: Child,
    pub port: u16,
    bin: String,
}

impl Broker {
    pub fn start() -> Broker {
        let bin = std::env::var("LOYALSCORE_TANSU").unwrap_or_else(|_| "tansu".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{bin} could not start ({e}): run ./scripts/test.sh, which installs it")
            });
        let broker = Broker { child, port, bin };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not come up on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(&self.bin)
            .args(["topic", "create", name, "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args(["--partitions", &partitions.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "topic create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A producer that writes every message as a record batch of its own.
    ///
    /// tansu 0.6 loses messages of multi-message record batches on fetch: a consumer resuming
    /// at an offset inside a batch (as one does from a committed offset after a crash) is
    /// answered with the batches after it, and reading a topic of several batches from its
    /// start missed some. Measured: resuming at offset 5 of a ten-message batch, the next
    /// message delivered was offset 10; five batches of 20 read back as 95 messages. Kafka
    /// returns the batch that holds the offset. One message a batch keeps every offset on a
    /// batch boundary, so the tests see what a consumer sees on Kafka.
    pub fn producer(&self) -> FutureProducer {
        self.producer_with(1)
    }

    /// A producer batching up to `batch` messages (a backlog read from its start is not
    /// affected by the fetch behaviour above).
    pub fn producer_with(&self, batch: usize) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            // One request in flight per partition: a retry cannot reorder a customer's messages.
            .set("max.in.flight.requests.per.connection", "1")
            .set("batch.num.messages", batch.to_string())
            .set("linger.ms", if batch > 1 { "5" } else { "0" })
            .create()
            .unwrap()
    }

    /// Produces every (key, payload) in order, waiting for the broker to take each.
    pub async fn produce(&self, topic: &str, messages: &[(String, Vec<u8>)]) {
        self.produce_with(&self.producer(), topic, messages).await
    }

    /// [`Self::produce`] through the given producer.
    pub async fn produce_with(
        &self,
        producer: &FutureProducer,
        topic: &str,
        messages: &[(String, Vec<u8>)],
    ) {
        for chunk in messages.chunks(2000) {
            let sends = chunk.iter().map(|(k, v)| {
                producer.send(
                    FutureRecord::to(topic).key(k).payload(v),
                    Duration::from_secs(30),
                )
            });
            for r in futures::future::join_all(sends).await {
                r.map_err(|(e, _)| e).unwrap();
            }
        }
    }

    /// Produces one message to a given partition.
    pub async fn produce_to(&self, topic: &str, partition: i32, key: &str, payload: &[u8]) {
        self.producer()
            .send(
                FutureRecord::to(topic)
                    .partition(partition)
                    .key(key)
                    .payload(payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    /// Every message now on `topic`, as (key, payload), in order within each partition: read
    /// with the server's own topic reader.
    pub fn read_all(&self, topic: &str) -> Vec<(String, Vec<u8>)> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.brokers());
        let mut out = Vec::new();
        loyalscore::stream::kafka::read_topic(config, "test-reader", topic, |k, v| {
            let key = String::from_utf8(k.unwrap_or_default().to_vec()).unwrap();
            out.push((key, v.unwrap_or_default().to_vec()));
        })
        .unwrap();
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Kafka clients, configured once for every service.
//!
//! Only the Kafka protocol is assumed: nothing here knows which broker implementation answers.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    str::FromStr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use rdkafka::{
    ClientConfig, ClientContext, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaResult,
    producer::FutureProducer,
    statistics::Statistics,
    types::RDKafkaErrorCode,
};
use tracing::{info, warn};

use crate::secret::{self, ExposeSecret as _, SecretString};

/// One librdkafka option, `key=value`.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaOption {
    /// The librdkafka property name.
    pub key: String,
    /// Its value.
    pub value: String,
}

impl KafkaOption {
    fn is_secret(&self) -> bool {
        let k = self.key.to_ascii_lowercase();
        ["password", "secret", "key", "token", "jaas"]
            .iter()
            .any(|s| k.contains(s))
    }
}

impl fmt::Debug for KafkaOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_secret() {
            write!(f, "{}=***", self.key)
        } else {
            write!(f, "{}={}", self.key, self.value)
        }
    }
}

impl FromStr for KafkaOption {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            // An empty KAFKA_OPTIONS (or a trailing `;`) means "no option".
            return Ok(Self {
                key: String::new(),
                value: String::new(),
            });
        }
        match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok(Self {
                key: k.trim().to_owned(),
                value: v.to_owned(),
            }),
            _ => Err("expected key=value, e.g. security.protocol=SASL_SSL".to_owned()),
        }
    }
}

/// Kafka connection options shared by every service.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated host:port list.
    #[arg(
        long = "kafka-broker",
        env = "KAFKA_BROKER",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,

    /// Extra librdkafka property key=value (repeatable; `;`-separated in the env), e.g.
    /// security.protocol=SASL_SSL. Applied last, so it overrides the service's defaults.
    #[arg(
        long = "kafka-option",
        env = "KAFKA_OPTIONS",
        value_delimiter = ';',
        hide_env_values = true
    )]
    pub options: Vec<KafkaOption>,

    /// Security protocol: plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(long = "kafka-security-protocol", env = "KAFKA_SECURITY_PROTOCOL", value_enum, default_value_t = SecurityProtocol::Plaintext)]
    pub security_protocol: SecurityProtocol,

    /// SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long = "kafka-sasl-mechanism", env = "KAFKA_SASL_MECHANISM")]
    pub sasl_mechanism: Option<String>,

    /// SASL username.
    #[arg(long = "kafka-sasl-username", env = "KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,

    /// SASL password (prefer KAFKA_SASL_PASSWORD_FILE, e.g. a Docker secret).
    #[arg(
        long = "kafka-sasl-password",
        env = "KAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<SecretString>,

    /// File holding the SASL password (trailing newline ignored).
    #[arg(long = "kafka-sasl-password-file", env = "KAFKA_SASL_PASSWORD_FILE")]
    pub sasl_password_file: Option<PathBuf>,

    /// CA certificates (PEM) to verify the brokers.
    #[arg(long = "kafka-ssl-ca-location", env = "KAFKA_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS.
    #[arg(
        long = "kafka-ssl-certificate-location",
        env = "KAFKA_SSL_CERTIFICATE_LOCATION"
    )]
    pub ssl_certificate_location: Option<PathBuf>,

    /// Client private key (PEM) for mutual TLS.
    #[arg(long = "kafka-ssl-key-location", env = "KAFKA_SSL_KEY_LOCATION")]
    pub ssl_key_location: Option<PathBuf>,

    /// Password of the client private key (prefer KAFKA_SSL_KEY_PASSWORD_FILE).
    #[arg(
        long = "kafka-ssl-key-password",
        env = "KAFKA_SSL_KEY_PASSWORD",
        hide_env_values = true
    )]
    pub ssl_key_password: Option<SecretString>,

    /// File holding the client private key's password.
    #[arg(
        long = "kafka-ssl-key-password-file",
        env = "KAFKA_SSL_KEY_PASSWORD_FILE"
    )]
    pub ssl_key_password_file: Option<PathBuf>,
}

/// Kafka `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SecurityProtocol {
    /// No TLS, no SASL.
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS (PLAIN sends the password in the clear: avoid).
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
}

impl KafkaArgs {
    /// Args for a broker address with no extra options (tests, tools).
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            options: Vec::new(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            sasl_password_file: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            ssl_key_password_file: None,
        }
    }

    /// A client config with the bootstrap servers, `defaults`, the security settings, then the
    /// user's options. Fails only when a secret file cannot be read.
    pub fn config(&self, defaults: &[(&str, &str)]) -> anyhow::Result<ClientConfig> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            cfg.set(*k, *v);
        }
        cfg.set("security.protocol", self.security_protocol.as_str());
        if let Some(m) = &self.sasl_mechanism {
            cfg.set("sasl.mechanism", m);
        }
        if let Some(u) = &self.sasl_username {
            cfg.set("sasl.username", u);
        }
        if let Some(p) = secret::resolve(
            self.sasl_password.as_ref(),
            self.sasl_password_file.as_deref(),
        )? {
            cfg.set("sasl.password", p.expose_secret());
        }
        for (key, path) in [
            ("ssl.ca.location", &self.ssl_ca_location),
            ("ssl.certificate.location", &self.ssl_certificate_location),
            ("ssl.key.location", &self.ssl_key_location),
        ] {
            if let Some(path) = path {
                cfg.set(key, path.display().to_string());
            }
        }
        if let Some(p) = secret::resolve(
            self.ssl_key_password.as_ref(),
            self.ssl_key_password_file.as_deref(),
        )? {
            cfg.set("ssl.key.password", p.expose_secret());
        }
        for o in self.options.iter().filter(|o| !o.key.is_empty()) {
            cfg.set(&o.key, &o.value);
        }
        Ok(cfg)
    }

    /// Producer settings tuned for throughput and safety: idempotent, `acks=all`, lz4, batched.
    /// `extra` settings go between these defaults and the user's options.
    pub fn producer_config(&self, extra: &[(&str, &str)]) -> anyhow::Result<ClientConfig> {
        let mut defaults = vec![
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("compression.type", "lz4"),
            ("linger.ms", "5"),
            ("batch.num.messages", "10000"),
            ("batch.size", "1000000"),
            // Seconds of buffer at broker speed, not 256 MiB: the producer generating faster
            // than the broker takes peaked at 92 MB RSS with 500,000 / 256 MiB, 57 MB with
            // these, at the same throughput.
            ("queue.buffering.max.messages", "100000"),
            ("queue.buffering.max.kbytes", "32768"),
            ("message.timeout.ms", "300000"),
        ];
        defaults.extend_from_slice(extra);
        self.config(&defaults)
    }

    /// Consumer settings that bound memory: a prefetch of 5,000 messages / 16 MiB per partition
    /// and 2 MiB fetches instead of librdkafka's 100,000 / 64 MiB and 50 MiB, with the fetch
    /// postponed 10 ms (librdkafka: 1 s) once that prefetch is full. Measured on Kafka 4.1
    /// (`cargo xtask bench --tuning`, a stream-reader draining 1,000,000 records, medians of 3):
    /// 138.7K records/s and 62 MB peak RSS, against 120.6K/s and 113 MB with librdkafka's
    /// defaults and 22.5K/s with the 1 s backoff. Larger records still arrive: Kafka returns a
    /// first batch larger than the limits (KIP-74; the hostile-input test consumes a 10 MiB
    /// record with these settings).
    pub const CONSUMER_MEMORY: &'static [(&'static str, &'static str)] = &[
        ("queued.min.messages", "5000"),
        ("queued.max.messages.kbytes", "16384"),
        ("fetch.max.bytes", "2097152"),
        ("fetch.queue.backoff.ms", "10"),
    ];

    /// Producer settings of the producer service: a 50 ms linger (librdkafka: 5 ms), so that
    /// batches are fuller. Measured on Kafka 4.1 at a fixed 10,000 logs/s (medians of 3):
    /// 11.1 µs CPU per log against 15.2 µs with 5 ms; unthrottled the two are within noise
    /// of each other (325K vs 366K logs/s). It adds at most 50 ms of latency.
    pub const SOURCE_PRODUCER: &'static [(&'static str, &'static str)] = &[("linger.ms", "50")];

    /// A [`FutureProducer`] with [`KafkaArgs::producer_config`].
    pub fn producer(&self, extra: &[(&str, &str)]) -> anyhow::Result<FutureProducer> {
        self.producer_config(extra)?
            .create()
            .context("cannot create the Kafka producer")
    }

    /// A group consumer that never stores offsets by itself (`enable.auto.offset.store=false`):
    /// the service stores an offset only once the record's output is durable, and the stored
    /// offsets are committed every second and on shutdown. The classic group protocol (eager or
    /// cooperative-sticky assignment, `partition.assignment.strategy`) is the default; the
    /// KIP-848 protocol is chosen with the option `group.protocol=consumer`.
    pub fn consumer<C: ConsumerContext + 'static>(
        &self,
        group_id: &str,
        context: C,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<StreamConsumer<C>> {
        let mut defaults = vec![
            ("group.id", group_id),
            ("enable.auto.offset.store", "false"),
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "1000"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("fetch.wait.max.ms", "100"),
            ("statistics.interval.ms", "5000"),
        ];
        // With the KIP-848 protocol (`group.protocol=consumer`) the session timeout is the
        // broker's `group.consumer.session.timeout.ms`; librdkafka refuses a client-side one.
        let kip848 = self
            .options
            .iter()
            .any(|o| o.key == "group.protocol" && o.value.eq_ignore_ascii_case("consumer"));
        if !kip848 {
            defaults.push(("session.timeout.ms", "10000"));
        }
        defaults.extend_from_slice(Self::CONSUMER_MEMORY);
        defaults.extend_from_slice(extra);
        self.config(&defaults)?
            .create_with_context(context)
            .context("cannot create the Kafka consumer")
    }

    /// An admin client.
    pub fn admin(&self) -> anyhow::Result<AdminClient<DefaultClientContext>> {
        self.config(&[])?
            .create()
            .context("cannot create the Kafka admin client")
    }

    /// Creates `topics` with `partitions` each; topics that already exist are left alone.
    pub async fn ensure_topics(
        &self,
        topics: &[&str],
        partitions: i32,
        replication: i32,
    ) -> anyhow::Result<()> {
        let admin = self.admin()?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics(&new, &opts)
            .await
            .context("create topics")?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => bail!("cannot create topic {topic}: {code}"),
            }
        }
        Ok(())
    }
}

/// Per-partition progress of out-of-order completions, so that a consumer stores an offset
/// only when that record and every earlier one of its partition are done.
///
/// Records of one partition are begun in offset order; they may complete in any order.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<(String, i32), VecDeque<(i64, bool)>>,
}

impl OffsetTracker {
    /// Registers a record as in flight.
    pub fn begin(&mut self, topic: &str, partition: i32, offset: i64) {
        let q = match self.partitions.get_mut(&(topic.to_owned(), partition)) {
            Some(q) => q,
            None => self
                .partitions
                .entry((topic.to_owned(), partition))
                .or_default(),
        };
        q.push_back((offset, false));
    }

    /// Marks a record done. Returns the next offset to commit (last contiguous done + 1) when
    /// it advanced. Unknown records (e.g. of a revoked partition) are ignored.
    pub fn complete(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let q = self.partitions.get_mut(&(topic.to_owned(), partition))?;
        let i = q.binary_search_by_key(&offset, |(o, _)| *o).ok()?;
        q[i].1 = true;
        let mut next = None;
        while let Some(&(o, true)) = q.front() {
            next = Some(o + 1);
            q.pop_front();
        }
        next
    }

    /// Records in flight across all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(VecDeque::len).sum()
    }

    /// Forgets partitions (after a revoke): their in-flight records will be redelivered to the
    /// partition's next owner.
    pub fn forget(&mut self, tpl: &TopicPartitionList) {
        for e in tpl.elements() {
            self.partitions
                .remove(&(e.topic().to_owned(), e.partition()));
        }
    }
}

/// An [`OffsetTracker`] shared between a consume loop and its consumer's rebalance callbacks.
#[derive(Debug, Clone, Default)]
pub struct SharedTracker(Arc<Mutex<OffsetTracker>>);

impl SharedTracker {
    /// Locks the tracker (a poisoned lock is recovered: the tracker has no invariant a panic
    /// half-way could break that matters more than continuing).
    pub fn lock(&self) -> MutexGuard<'_, OffsetTracker> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Consumer context of the pipeline's consume loops: logs rebalances and, on revoke, forgets
/// the revoked partitions' in-flight records and synchronously commits what was stored (only
/// acknowledged work is ever stored), so the next owner resumes exactly after it.
#[derive(Debug, Clone)]
pub struct PipelineContext {
    /// The loop's tracker.
    pub tracker: SharedTracker,
    /// Number of partitions currently assigned to this consumer (for status and readiness).
    pub assigned: Arc<AtomicUsize>,
    /// Readiness checks `kafka` (a broker connection is up) and the group check (joined the
    /// consumer group: an assignment arrived, possibly empty).
    pub readiness: crate::observe::Readiness,
    /// Name of the group check: `group`, or another name for a service's second consumer.
    pub group_check: &'static str,
    /// Partitions assigned and revoked, in order, for a loop with per-partition state that
    /// asked for them ([`PipelineContext::with_partition_changes`]): the callbacks run inside
    /// the loop's own `recv`, so the loop sees a revoke before any record or tick that follows
    /// it.
    pub changes: Option<PartitionChanges>,
    /// Offsets with metadata to commit for a partition when it is revoked, for a loop that
    /// commits explicitly (checkpoints); empty for loops that store offsets.
    pub checkpoints: Checkpoints,
    /// Latest consumer lag per (topic, partition) from librdkafka's statistics (every 5 s),
    /// with the time it was reported.
    pub lags: Lags,
    /// The loop's transaction in exactly-once mode: aborted on revoke, and nothing is
    /// committed by the consumer itself ([`crate::transaction`]).
    pub transaction: Option<crate::transaction::Transaction>,
}

impl PipelineContext {
    /// A context whose readiness checks start failing until proven otherwise.
    pub fn new(readiness: crate::observe::Readiness, assigned: Arc<AtomicUsize>) -> Self {
        readiness.declare("kafka", "no broker connection yet");
        readiness.declare("group", "not in the consumer group yet");
        metrics::describe_gauge!(
            "kafka_consumer_lag",
            "High watermark minus consumer position, per partition"
        );
        metrics::describe_gauge!(
            "kafka_assigned_partitions",
            "Partitions assigned to this service's consumers, per topic"
        );
        Self {
            tracker: SharedTracker::default(),
            assigned,
            readiness,
            group_check: "group",
            changes: None,
            checkpoints: Checkpoints::default(),
            lags: Arc::default(),
            transaction: None,
        }
    }

    /// The same context for a transactional loop: a revoke aborts `transaction` (the loop
    /// rolls back) instead of committing offsets.
    pub fn with_transaction(mut self, transaction: crate::transaction::Transaction) -> Self {
        self.transaction = Some(transaction);
        self
    }

    /// The same context with its own group check (for a service's second consumer group),
    /// failing until that consumer joins its group.
    pub fn with_group_check(mut self, name: &'static str) -> Self {
        self.readiness
            .declare(name, "not in the consumer group yet");
        self.group_check = name;
        self
    }

    /// The same context recording assignment changes in [`PipelineContext::changes`] (the loop
    /// must take them).
    pub fn with_partition_changes(mut self) -> Self {
        self.changes = Some(PartitionChanges::default());
        self
    }
}

/// A partition assignment change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionChange {
    /// Assigned (with eager assignment: every partition of the new assignment).
    Assigned(String, i32),
    /// Revoked (with eager assignment: every partition of the old assignment).
    Revoked(String, i32),
}

/// Assignment changes not yet taken by the loop.
#[derive(Debug, Clone, Default)]
pub struct PartitionChanges(Arc<Mutex<VecDeque<PartitionChange>>>);

impl PartitionChanges {
    fn push(&self, tpl: &TopicPartitionList, change: fn(String, i32) -> PartitionChange) {
        let mut q = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for e in tpl.elements() {
            q.push_back(change(e.topic().to_owned(), e.partition()));
        }
    }

    /// The changes since the last call, oldest first.
    pub fn take(&self) -> Vec<PartitionChange> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect()
    }
}

/// Per (topic, partition): the offset to commit and its metadata, kept current by a loop that
/// commits explicitly; committed synchronously for the partitions being revoked.
#[derive(Debug, Clone, Default)]
pub struct Checkpoints(Arc<Mutex<HashMap<(String, i32), Checkpoint>>>);

/// An offset to commit and its metadata.
type Checkpoint = (i64, String);

impl Checkpoints {
    /// Sets the checkpoint of a partition.
    pub fn set(&self, topic: &str, partition: i32, offset: i64, metadata: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((topic.to_owned(), partition), (offset, metadata));
    }

    /// Removes and returns the checkpoints of `tpl`'s partitions.
    fn take(&self, tpl: &TopicPartitionList) -> Vec<(String, i32, i64, String)> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        tpl.elements()
            .iter()
            .filter_map(|e| {
                let key = (e.topic().to_owned(), e.partition());
                map.remove(&key).map(|(o, m)| (key.0, key.1, o, m))
            })
            .collect()
    }
}

/// Commits offsets with metadata (`(topic, partition, offset, metadata)`); a synchronous
/// commit runs off the runtime's workers.
pub fn commit_checkpoints<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    checkpoints: &[(String, i32, i64, String)],
    mode: CommitMode,
) -> KafkaResult<()> {
    if checkpoints.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::with_capacity(checkpoints.len());
    for (topic, partition, offset, metadata) in checkpoints {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        if let Some(mut e) = tpl.find_partition(topic, *partition) {
            e.set_metadata(metadata);
        }
    }
    match mode {
        CommitMode::Sync => crate::run_blocking(|| consumer.commit(&tpl, mode)),
        CommitMode::Async => consumer.commit(&tpl, mode),
    }
}

/// The committed offsets and their metadata of `partitions` of `topic` (a broker round trip,
/// off the runtime's workers): `None` for a partition without a committed offset.
pub fn committed_with_metadata<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> KafkaResult<Vec<(i32, Option<i64>, String)>> {
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = crate::run_blocking(|| consumer.committed_offsets(tpl, timeout))?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            (e.partition(), offset, e.metadata().to_owned())
        })
        .collect())
}

/// Consumer lag per (topic, partition) and when it was reported.
pub type Lags = Arc<Mutex<HashMap<(String, i32), (i64, std::time::Instant)>>>;

/// True when at least one real broker (not a bootstrap placeholder) is connected.
pub fn brokers_up(stats: &Statistics) -> bool {
    stats
        .brokers
        .values()
        .any(|b| b.nodeid >= 0 && b.state == "UP")
}

impl ClientContext for PipelineContext {
    fn stats(&self, stats: Statistics) {
        let up = brokers_up(&stats);
        self.readiness.set_kafka(up);
        let mut lags = self.lags.lock().unwrap_or_else(PoisonError::into_inner);
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                // Lag = high watermark − position (the next offset the application reads).
                // librdkafka's own `consumer_lag` counts from the committed offset, which the
                // stream-reader deliberately holds back behind open windows.
                let position = if p.app_offset >= 0 {
                    p.app_offset
                } else {
                    p.committed_offset
                };
                if *partition < 0 || p.fetch_state != "active" || p.hi_offset < 0 || position < 0 {
                    continue;
                }
                let lag = (p.hi_offset - position).max(0);
                lags.insert(
                    (topic.clone(), *partition),
                    (lag, std::time::Instant::now()),
                );
                metrics::gauge!(
                    "kafka_consumer_lag",
                    "topic" => topic.clone(),
                    "partition" => partition.to_string()
                )
                .set(lag as f64);
            }
        }
    }
}

impl ConsumerContext for PipelineContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.tracker.lock().forget(tpl);
            if let Some(changes) = &self.changes {
                changes.push(tpl, PartitionChange::Revoked);
            }
            self.lags
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
            if let Some(transaction) = &self.transaction {
                // Past this callback the partitions may be another member's: nothing derived
                // from them may be committed any more.
                info!(partitions = tpl.count(), "partitions revoked");
                transaction.abort_on_revoke();
                return;
            }
            info!(
                partitions = tpl.count(),
                "partitions revoked, committing acknowledged offsets"
            );
            let checkpoints = self.checkpoints.take(tpl);
            if let Err(error) = commit_checkpoints(consumer, &checkpoints, CommitMode::Sync) {
                warn!(%error, "checkpoint commit on revoke failed");
            }
            // Librdkafka calls this from the consumer's poll, i.e. on a runtime worker: the
            // synchronous commit (one broker round trip, longer while the coordinator moves)
            // must not stall the other tasks.
            let committed =
                crate::run_blocking(|| consumer.commit_consumer_state(CommitMode::Sync));
            if let Err(error) = committed {
                // "No offset" simply means nothing new was stored since the last commit.
                if !matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::NoOffset)) {
                    warn!(%error, "commit on revoke failed");
                }
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts: Vec<String> = tpl
                    .elements()
                    .iter()
                    .map(|e| format!("{}/{}", e.topic(), e.partition()))
                    .collect();
                info!(partitions = ?parts, "partitions assigned");
                if let Some(changes) = &self.changes {
                    changes.push(tpl, PartitionChange::Assigned);
                }
                self.record_assignment(consumer, tpl);
                // In the group, even with nothing assigned: an instance beyond the partition count
                // is a ready standby, not a failure.
                self.readiness.set(self.group_check, Ok(()));
            }
            Rebalance::Error(error) => warn!(%error, "rebalance error"),
            Rebalance::Revoke(tpl) => self.record_assignment(consumer, tpl),
        }
    }
}

impl PipelineContext {
    /// Publishes the consumer's current assignment (with cooperative or KIP-848 rebalancing a
    /// callback's `changed` list is only what was added or removed), per topic, so that two
    /// consumers of one service (the stream-reader's stages) do not overwrite each other.
    fn record_assignment(&self, consumer: &BaseConsumer<Self>, changed: &TopicPartitionList) {
        let assignment = consumer.assignment().unwrap_or_default();
        self.assigned.store(assignment.count(), Ordering::Relaxed);
        let mut per_topic: HashMap<String, usize> = changed
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), 0))
            .collect();
        for e in assignment.elements() {
            *per_topic.entry(e.topic().to_owned()).or_default() += 1;
        }
        for (topic, n) in per_topic {
            metrics::gauge!("kafka_assigned_partitions", "topic" => topic).set(n as f64);
        }
    }
}

/// Bounded in-flight work for a consume loop. At `max` records in flight the loop stops taking
/// records (`saturated`); if that lasts `pause_after` (a stuck downstream, e.g. Cassandra down),
/// the assigned partitions are paused so the loop can keep polling — which keeps the group
/// membership alive — without receiving; they are resumed once half of the work is done.
/// Pausing is not used for short saturation: librdkafka drops its prefetched records on pause,
/// and re-fetching them after every resume would throttle a busy consumer.
#[derive(Debug)]
pub struct Backpressure {
    max: usize,
    in_flight: usize,
    paused: bool,
    saturated_since: Option<std::time::Instant>,
    pause_after: std::time::Duration,
}

impl Backpressure {
    /// At most `max` records in flight (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            in_flight: 0,
            paused: false,
            saturated_since: None,
            pause_after: std::time::Duration::from_secs(5),
        }
    }

    /// Records in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// True while the loop should take records from the consumer: below the limit, or paused
    /// (a paused consumer delivers nothing, but must be polled).
    pub fn accepting(&self) -> bool {
        self.in_flight < self.max || self.paused
    }

    /// A record was handed to a worker.
    pub fn started<C: ConsumerContext>(&mut self, consumer: &StreamConsumer<C>) {
        self.in_flight += 1;
        if self.in_flight >= self.max {
            self.saturated_since
                .get_or_insert_with(std::time::Instant::now);
            if self.paused {
                // A rebalance may have assigned new partitions meanwhile.
                self.pause(consumer);
            }
        }
    }

    /// Call periodically: pauses the partitions when saturated for too long.
    pub fn tick<C: ConsumerContext>(&mut self, consumer: &StreamConsumer<C>) {
        if !self.paused
            && self.in_flight >= self.max
            && self
                .saturated_since
                .is_some_and(|t| t.elapsed() >= self.pause_after)
        {
            warn!(
                in_flight = self.in_flight,
                "downstream stuck, pausing consumption"
            );
            self.pause(consumer);
        }
    }

    fn pause<C: ConsumerContext>(&mut self, consumer: &StreamConsumer<C>) {
        if let Ok(assignment) = consumer.assignment() {
            let _ = consumer.pause(&assignment);
        }
        self.paused = true;
    }

    /// Nothing is in flight any more (the work was discarded): resumes paused partitions.
    pub fn reset<C: ConsumerContext>(&mut self, consumer: &StreamConsumer<C>) {
        self.in_flight = 0;
        self.saturated_since = None;
        if self.paused {
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.resume(&assignment);
            }
            self.paused = false;
        }
    }

    /// A record's work finished.
    pub fn finished<C: ConsumerContext>(&mut self, consumer: &StreamConsumer<C>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight < self.max {
            self.saturated_since = None;
        }
        if self.paused && self.in_flight <= self.max / 2 {
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.resume(&assignment);
            }
            self.paused = false;
            info!(
                in_flight = self.in_flight,
                "downstream recovered, resuming consumption"
            );
        }
    }
}

/// Marks a record done in the tracker and, when its partition's contiguous progress advanced,
/// stores the new offset for the next commit.
pub fn complete_and_store<C: ConsumerContext>(
    tracker: &SharedTracker,
    consumer: &StreamConsumer<C>,
    topic: &str,
    partition: i32,
    offset: i64,
) {
    let next = tracker.lock().complete(topic, partition, offset);
    if let Some(next) = next
        && let Err(error) = store_next_offset(consumer, topic, partition, next)
    {
        // Typically the partition was revoked meanwhile; its next owner redoes the record.
        warn!(%error, topic, partition, offset = next, "cannot store offset");
    }
}

/// Stores `next_offset` (the offset of the next record to read) for a partition, to be committed
/// by the next auto-commit.
pub fn store_next_offset<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    topic: &str,
    partition: i32,
    next_offset: i64,
) -> KafkaResult<()> {
    let mut tpl = TopicPartitionList::with_capacity(1);
    tpl.add_partition_offset(topic, partition, Offset::Offset(next_offset))?;
    consumer.store_offsets(&tpl)
}

/// Final synchronous commit of everything stored, for graceful shutdown (off the runtime's
/// workers, see [`crate::run_blocking`]).
pub fn final_commit<C: ConsumerContext>(consumer: &StreamConsumer<C>) {
    match crate::run_blocking(|| consumer.commit_consumer_state(CommitMode::Sync)) {
        Ok(()) => info!("final offset commit done"),
        Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
        Err(error) => warn!(%error, "final offset commit failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_advances_only_over_contiguous_completions() {
        let mut t = OffsetTracker::default();
        for o in [10, 11, 12, 14] {
            t.begin("t", 0, o);
        }
        t.begin("t", 1, 5);
        assert_eq!(t.complete("t", 0, 11), None);
        assert_eq!(t.complete("t", 0, 12), None);
        assert_eq!(t.complete("t", 0, 10), Some(13));
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.complete("t", 1, 5), Some(6));
        assert_eq!(t.complete("t", 0, 99), None, "unknown offsets are ignored");
        assert_eq!(t.complete("t", 0, 14), Some(15));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn options_parse_and_redact() {
        let o: KafkaOption = "sasl.password=hunter2".parse().expect("parses");
        assert_eq!(format!("{o:?}"), "sasl.password=***");
        let o: KafkaOption = "security.protocol=SSL".parse().expect("parses");
        assert_eq!(format!("{o:?}"), "security.protocol=SSL");
        assert!("novalue".parse::<KafkaOption>().is_err());
        let empty: KafkaOption = "".parse().expect("empty is no option");
        let mut args = KafkaArgs::new("b:9092");
        args.options = vec![empty];
        assert!(args.config(&[]).is_ok());
    }
}

//! Client settings: bootstrap servers, security, librdkafka options, and the producer,
//! consumer and admin clients built from them; topic creation.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use anyhow::{Context as _, bail};
use clap::Args;
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication},
    client::DefaultClientContext,
    consumer::{ConsumerContext, StreamConsumer},
    producer::FutureProducer,
    types::RDKafkaErrorCode,
};

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

    /// Security protocol: plaintext, ssl, sasl_plaintext or sasl_ssl (any case, `_` or `-`).
    #[arg(long = "kafka-security-protocol", env = "KAFKA_SECURITY_PROTOCOL", value_enum, value_parser = crate::enums::Lenient::<SecurityProtocol>::new(), default_value_t = SecurityProtocol::Plaintext)]
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

    /// The largest record `topic` accepts: its `max.message.bytes` (topic override or the
    /// broker's default), as the broker describes it.
    pub async fn topic_max_message_bytes(&self, topic: &str) -> anyhow::Result<usize> {
        let admin = self.admin()?;
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &opts)
            .await
            .with_context(|| format!("describe the configuration of `{topic}`"))?;
        let resource = results
            .into_iter()
            .next()
            .context("no answer")?
            .map_err(|code| anyhow::anyhow!("cannot describe `{topic}`: {code}"))?;
        resource
            .get("max.message.bytes")
            .and_then(|entry| entry.value.as_deref())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("`{topic}` has no max.message.bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

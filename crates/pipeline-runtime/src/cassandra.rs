//! CQL sessions, configured once for every service (scylla driver, any CQL v4 server).

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{ArgAction, Args, ValueEnum};
use scylla::{
    client::{
        execution_profile::ExecutionProfile, session::Session, session_builder::SessionBuilder,
    },
    policies::load_balancing::DefaultPolicy,
    statement::Consistency,
};

use crate::secret::{self, ExposeSecret as _, SecretString};

/// Write/read consistency level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsistencyArg {
    /// ONE
    One,
    /// TWO
    Two,
    /// THREE
    Three,
    /// QUORUM
    Quorum,
    /// ALL
    All,
    /// LOCAL_ONE
    LocalOne,
    /// LOCAL_QUORUM
    LocalQuorum,
    /// EACH_QUORUM
    EachQuorum,
}

impl From<ConsistencyArg> for Consistency {
    fn from(c: ConsistencyArg) -> Self {
        match c {
            ConsistencyArg::One => Consistency::One,
            ConsistencyArg::Two => Consistency::Two,
            ConsistencyArg::Three => Consistency::Three,
            ConsistencyArg::Quorum => Consistency::Quorum,
            ConsistencyArg::All => Consistency::All,
            ConsistencyArg::LocalOne => Consistency::LocalOne,
            ConsistencyArg::LocalQuorum => Consistency::LocalQuorum,
            ConsistencyArg::EachQuorum => Consistency::EachQuorum,
        }
    }
}

/// A CQL identifier we are willing to splice into DDL and statements: `[A-Za-z_][A-Za-z0-9_]{0,47}`.
/// Keyspace names come from config, never from record data; this check keeps even config from
/// injecting CQL.
pub fn parse_identifier(s: &str) -> Result<String, String> {
    let ok = (1..=48).contains(&s.len())
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a valid CQL identifier"))
    }
}

/// Cassandra connection options shared by every service.
#[derive(Debug, Clone, Args)]
pub struct CassandraArgs {
    /// Cassandra contact points, comma-separated host:port list.
    #[arg(
        long = "cassandra-nodes",
        env = "CASSANDRA_NODES",
        default_value = "127.0.0.1:9042",
        value_delimiter = ','
    )]
    pub nodes: Vec<String>,

    /// Keyspace of the pipeline's tables.
    #[arg(long = "cassandra-keyspace", env = "CASSANDRA_KEYSPACE", default_value = "ip_logs", value_parser = parse_identifier)]
    pub keyspace: String,

    /// Local datacenter: requests go to its nodes first (recommended for multi-DC clusters).
    #[arg(long = "cassandra-local-dc", env = "CASSANDRA_LOCAL_DC")]
    pub local_dc: Option<String>,

    /// Consistency level of reads and writes.
    #[arg(long = "cassandra-consistency", env = "CASSANDRA_CONSISTENCY", value_enum, value_parser = crate::enums::Lenient::<ConsistencyArg>::new(), default_value_t = ConsistencyArg::LocalQuorum)]
    pub consistency: ConsistencyArg,

    /// Username for password authentication.
    #[arg(long = "cassandra-username", env = "CASSANDRA_USERNAME")]
    pub username: Option<String>,

    /// Password for password authentication (prefer CASSANDRA_PASSWORD_FILE).
    #[arg(
        long = "cassandra-password",
        env = "CASSANDRA_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<SecretString>,

    /// File holding the password (e.g. a Docker secret; trailing newline ignored).
    #[arg(long = "cassandra-password-file", env = "CASSANDRA_PASSWORD_FILE")]
    pub password_file: Option<std::path::PathBuf>,

    /// Connect with TLS (client-to-node encryption).
    #[arg(long = "cassandra-tls", env = "CASSANDRA_TLS", default_value_t = false, action = ArgAction::Set)]
    pub tls: bool,

    /// CA certificates (PEM) to verify the nodes; without it the system roots are used.
    #[arg(long = "cassandra-tls-ca-file", env = "CASSANDRA_TLS_CA_FILE")]
    pub tls_ca_file: Option<std::path::PathBuf>,

    /// Client certificate (PEM) for mutual TLS.
    #[arg(long = "cassandra-tls-cert-file", env = "CASSANDRA_TLS_CERT_FILE")]
    pub tls_cert_file: Option<std::path::PathBuf>,

    /// Client private key (PEM) for mutual TLS.
    #[arg(long = "cassandra-tls-key-file", env = "CASSANDRA_TLS_KEY_FILE")]
    pub tls_key_file: Option<std::path::PathBuf>,

    /// Timeout of one CQL request, in milliseconds.
    #[arg(
        long = "cassandra-request-timeout-ms",
        env = "CASSANDRA_REQUEST_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub request_timeout_ms: u64,

    /// Timeout of connecting to a node, in milliseconds.
    #[arg(
        long = "cassandra-connect-timeout-ms",
        env = "CASSANDRA_CONNECT_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub connect_timeout_ms: u64,

    /// Wait for schema agreement after DDL (every node on the same schema version).
    #[arg(
        long = "cassandra-await-schema-agreement",
        env = "CASSANDRA_AWAIT_SCHEMA_AGREEMENT",
        default_value_t = true,
        action = ArgAction::Set
    )]
    pub await_schema_agreement: bool,
}

impl CassandraArgs {
    /// Args for the given contact points with every other option at its default.
    pub fn new(nodes: impl Into<String>, keyspace: impl Into<String>) -> Self {
        Self {
            nodes: nodes.into().split(',').map(str::to_owned).collect(),
            keyspace: keyspace.into(),
            local_dc: None,
            consistency: ConsistencyArg::LocalQuorum,
            username: None,
            password: None,
            password_file: None,
            tls: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            request_timeout_ms: 5_000,
            connect_timeout_ms: 5_000,
            await_schema_agreement: true,
        }
    }

    /// Connects a session (no keyspace selected: statements name it).
    pub async fn connect(&self) -> anyhow::Result<Session> {
        if self.nodes.is_empty() {
            bail!("no Cassandra contact points (CASSANDRA_NODES is empty)");
        }
        let mut lb = DefaultPolicy::builder().token_aware(true);
        if let Some(dc) = &self.local_dc {
            lb = lb.prefer_datacenter(dc.clone()).permit_dc_failover(false);
        }
        let profile = ExecutionProfile::builder()
            .consistency(self.consistency.into())
            .request_timeout(Some(Duration::from_millis(self.request_timeout_ms)))
            .load_balancing_policy(lb.build())
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(&self.nodes)
            .connection_timeout(Duration::from_millis(self.connect_timeout_ms))
            .default_execution_profile_handle(profile.into_handle())
            .auto_await_schema_agreement(self.await_schema_agreement);
        let password = secret::resolve(self.password.as_ref(), self.password_file.as_deref())?;
        match (&self.username, &password) {
            (Some(user), Some(password)) => builder = builder.user(user, password.expose_secret()),
            (None, None) => {}
            _ => bail!(
                "set both CASSANDRA_USERNAME and CASSANDRA_PASSWORD (or CASSANDRA_PASSWORD_FILE), or neither"
            ),
        }
        if self.tls {
            builder = builder.tls_context(Some(self.tls_context()?));
        }
        builder.build().await.map_err(|e| {
            let error = anyhow::Error::new(e);
            let text = format!("{error:#}");
            let lower = text.to_ascii_lowercase();
            if lower.contains("authentication") || lower.contains("username and/or password") {
                anyhow::anyhow!(
                    "Cassandra rejected the credentials of role `{}` (CASSANDRA_USERNAME, \
                     CASSANDRA_PASSWORD or CASSANDRA_PASSWORD_FILE): {text}",
                    self.username.as_deref().unwrap_or("")
                )
            } else if lower.contains("certificate") || lower.contains("ssl") {
                anyhow::anyhow!(
                    "the TLS handshake with Cassandra failed (CASSANDRA_TLS_CA_FILE must hold \
                     the CA that signed the nodes' certificates; CASSANDRA_TLS must match their \
                     client_encryption_options): {text}"
                )
            } else {
                error.context(format!(
                    "cannot connect to Cassandra at {}",
                    self.nodes.join(",")
                ))
            }
        })
    }
}

impl CassandraArgs {
    /// The OpenSSL context for client-to-node TLS: peer verification on, optional client
    /// certificate.
    fn tls_context(&self) -> anyhow::Result<openssl::ssl::SslContext> {
        use openssl::ssl::{SslContextBuilder, SslFiletype, SslMethod, SslVerifyMode};
        let mut b = SslContextBuilder::new(SslMethod::tls()).context("create a TLS context")?;
        b.set_verify(SslVerifyMode::PEER);
        match &self.tls_ca_file {
            Some(ca) => b
                .set_ca_file(ca)
                .with_context(|| format!("load the CA file {}", ca.display()))?,
            None => b
                .set_default_verify_paths()
                .context("load the system CA roots")?,
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => {
                b.set_certificate_chain_file(cert)
                    .with_context(|| format!("load the client certificate {}", cert.display()))?;
                b.set_private_key_file(key, SslFiletype::PEM)
                    .with_context(|| format!("load the client key {}", key.display()))?;
            }
            (None, None) => {}
            _ => bail!("set both CASSANDRA_TLS_CERT_FILE and CASSANDRA_TLS_KEY_FILE, or neither"),
        }
        Ok(b.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(parse_identifier("ip_logs").is_ok());
        assert!(parse_identifier("it_3f2a").is_ok());
        for bad in ["", "1abc", "ip-logs", "a; DROP KEYSPACE x", &"x".repeat(49)] {
            assert!(parse_identifier(bad).is_err(), "{bad}");
        }
    }
}

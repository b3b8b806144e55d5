//! The secured mode of a local stack (`--secure`): what a production deployment runs.
//!
//! * Kafka: clients on a `SASL_SSL` listener with SCRAM-SHA-512 (users created when the
//!   storage is formatted), the KRaft controllers on an `SSL` listener with mutual TLS, the
//!   `StandardAuthorizer` with no ACL meaning no access, and per service only the ACLs it needs
//!   ([`pipeline_acls`]).
//! * Cassandra: client and internode TLS, `PasswordAuthenticator`, `CassandraAuthorizer`, a
//!   role per service ([`setup_roles`]): migrations run as `pipeline_migrator` (who may create
//!   keyspaces and grants on what it created), the writer as `cassandra_writer` (SELECT and
//!   MODIFY on the keyspace only: it cannot create or drop tables), queries as `analyst`
//!   (SELECT only); the default `cassandra` superuser cannot log in.
//!
//! Certificates ([`tls`]) and passwords are generated per stack under `tls/` and `secrets/` of
//! its state directory (files only their owner reads), never committed.

pub mod acl;
pub mod tls;

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use pipeline_runtime::{
    cassandra::CassandraArgs,
    kafka::{KafkaArgs, SecurityProtocol},
};
use scylla::client::session::Session;

use acl::{Acl, Operation as Op, Pattern, Resource};

/// The common name of every node's certificate; Kafka's controller listener maps it to the
/// super user `User:kafka-node`.
pub const NODE_CN: &str = "kafka-node";

/// The Kafka super user (xtask's admin client, inter-broker traffic).
pub const KAFKA_ADMIN: &str = "admin";
/// The Kafka users of the services and of the operator tools (`producer dlq|replay`).
pub const KAFKA_USERS: [&str; 5] = [
    KAFKA_ADMIN,
    "producer",
    "stream-reader",
    "cassandra-writer",
    "operator",
];

/// The Cassandra superuser xtask creates (the default `cassandra` role is locked).
pub const CQL_ADMIN: &str = "pipeline_admin";
/// The role migrations run as.
pub const CQL_MIGRATOR: &str = "pipeline_migrator";
/// The writer's role.
pub const CQL_WRITER: &str = "cassandra_writer";
/// The read-only role of `cargo xtask cqlsh`.
pub const CQL_ANALYST: &str = "analyst";
const CQL_ROLES: [&str; 4] = [CQL_ADMIN, CQL_MIGRATOR, CQL_WRITER, CQL_ANALYST];

/// The SASL mechanism of every Kafka client.
pub const SASL_MECHANISM: &str = "SCRAM-SHA-512";

/// A secured stack's certificates and passwords.
#[derive(Debug, Clone)]
pub struct Security {
    dir: PathBuf,
}

impl Security {
    /// The certificates and passwords of the stack whose state is in `stack_dir`.
    pub fn at(stack_dir: &Path) -> Self {
        Self {
            dir: stack_dir.to_owned(),
        }
    }

    /// Generates what is missing of the certificates (for `nodes` nodes) and passwords.
    pub fn ensure(&self, nodes: u8) -> anyhow::Result<()> {
        let s = self;
        tls::ensure(&s.tls_dir(), nodes)?;
        fs::create_dir_all(s.secrets_dir())?;
        for file in KAFKA_USERS
            .iter()
            .map(|u| format!("kafka-{u}"))
            .chain(CQL_ROLES.iter().map(|r| format!("cql-{r}")))
        {
            let path = s.secrets_dir().join(file);
            if !path.is_file() {
                tls::write_private(&path, uuid::Uuid::new_v4().simple().to_string().as_bytes())?;
            }
        }
        Ok(())
    }

    fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }

    fn secrets_dir(&self) -> PathBuf {
        self.dir.join("secrets")
    }

    /// The CA that signed every node's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.tls_dir().join("ca.pem")
    }

    /// A CA that signed nothing here (the untrusted-certificate tests).
    pub fn untrusted_ca(&self) -> PathBuf {
        self.tls_dir().join("untrusted-ca.pem")
    }

    /// Node `n`'s key, certificate and CA (PEM).
    pub fn node_pem(&self, node: u8) -> PathBuf {
        self.tls_dir().join(format!("node{node}.pem"))
    }

    /// The file holding a Kafka user's password.
    pub fn kafka_password_file(&self, user: &str) -> PathBuf {
        self.secrets_dir().join(format!("kafka-{user}"))
    }

    /// The file holding a Cassandra role's password.
    pub fn cql_password_file(&self, role: &str) -> PathBuf {
        self.secrets_dir().join(format!("cql-{role}"))
    }

    fn read(path: &Path) -> anyhow::Result<String> {
        Ok(fs::read_to_string(path)
            .with_context(|| format!("read {}", path.display()))?
            .trim()
            .to_owned())
    }

    /// The environment of a Kafka client running as `user`, as documented for the services.
    pub fn kafka_env(&self, user: &str) -> Vec<(String, String)> {
        vec![
            ("KAFKA_SECURITY_PROTOCOL".into(), "SASL_SSL".into()),
            ("KAFKA_SASL_MECHANISM".into(), SASL_MECHANISM.into()),
            ("KAFKA_SASL_USERNAME".into(), user.into()),
            (
                "KAFKA_SASL_PASSWORD_FILE".into(),
                self.kafka_password_file(user).display().to_string(),
            ),
            (
                "KAFKA_SSL_CA_LOCATION".into(),
                self.ca().display().to_string(),
            ),
        ]
    }

    /// The environment of a CQL client running as `role`, as documented for the services.
    pub fn cql_env(&self, role: &str) -> Vec<(String, String)> {
        vec![
            ("CASSANDRA_TLS".into(), "true".into()),
            (
                "CASSANDRA_TLS_CA_FILE".into(),
                self.ca().display().to_string(),
            ),
            ("CASSANDRA_USERNAME".into(), role.into()),
            (
                "CASSANDRA_PASSWORD_FILE".into(),
                self.cql_password_file(role).display().to_string(),
            ),
        ]
    }

    /// Kafka client settings of `user` for `brokers`.
    pub fn kafka_args(&self, brokers: &str, user: &str) -> KafkaArgs {
        let mut k = KafkaArgs::new(brokers);
        k.security_protocol = SecurityProtocol::SaslSsl;
        k.sasl_mechanism = Some(SASL_MECHANISM.into());
        k.sasl_username = Some(user.into());
        k.sasl_password_file = Some(self.kafka_password_file(user));
        k.ssl_ca_location = Some(self.ca());
        k
    }

    /// CQL client settings of `role` (`None`: the default `cassandra` superuser, before
    /// [`setup_roles`] locked it).
    pub fn cql_args(&self, nodes: &str, keyspace: &str, role: Option<&str>) -> CassandraArgs {
        let mut c = CassandraArgs::new(nodes, keyspace);
        c.tls = true;
        c.tls_ca_file = Some(self.ca());
        match role {
            Some(role) => {
                c.username = Some(role.into());
                c.password_file = Some(self.cql_password_file(role));
            }
            None => {
                c.username = Some("cassandra".into());
                c.password = Some("cassandra".to_owned().into());
            }
        }
        c
    }

    /// A `cqlshrc` (TLS verifying the stack's CA) and a credentials file (only its owner reads
    /// it) for cqlsh as `role`.
    pub fn cqlshrc(&self, role: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let credentials = self.secrets_dir().join(format!("cqlsh-credentials-{role}"));
        tls::write_private(
            &credentials,
            format!(
                "[PlainTextAuthProvider]\nusername = {role}\npassword = {}\n",
                Self::read(&self.cql_password_file(role))?
            )
            .as_bytes(),
        )?;
        let cqlshrc = self.secrets_dir().join(format!("cqlshrc-{role}"));
        fs::write(
            &cqlshrc,
            format!(
                "[connection]\nssl = true\n\n[ssl]\ncertfile = {}\nvalidate = true\n",
                self.ca().display()
            ),
        )?;
        Ok((cqlshrc, credentials))
    }

    /// Whether [`setup_roles`] has run on this stack's Cassandra.
    pub fn roles_ready(&self) -> bool {
        self.secrets_dir().join("cql-roles-created").is_file()
    }

    /// `kafka-storage format` arguments creating every user's SCRAM credentials.
    pub fn scram_format_args(&self) -> anyhow::Result<Vec<String>> {
        let mut args = Vec::new();
        for user in KAFKA_USERS {
            let password = Self::read(&self.kafka_password_file(user))?;
            args.push("--add-scram".to_owned());
            args.push(format!(
                "{SASL_MECHANISM}=[name={user},password={password}]"
            ));
        }
        Ok(args)
    }

    /// The security part of node `node`'s `server.properties` (listener names `SASL_SSL` for
    /// clients and brokers, `CONTROLLER` for the KRaft quorum).
    pub fn kafka_properties(&self, node: u8) -> anyhow::Result<String> {
        let admin = Self::read(&self.kafka_password_file(KAFKA_ADMIN))?;
        Ok(format!(
            "# Secured (cargo xtask --secure): SCRAM over TLS for clients and brokers, mutual TLS\n\
             # for the controllers, ACLs enforced by the StandardAuthorizer.\n\
             sasl.enabled.mechanisms={SASL_MECHANISM}\n\
             sasl.mechanism.inter.broker.protocol={SASL_MECHANISM}\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
             org.apache.kafka.common.security.scram.ScramLoginModule required \
             username=\"{KAFKA_ADMIN}\" password=\"{admin}\";\n\
             ssl.keystore.type=PEM\n\
             ssl.keystore.location={keystore}\n\
             ssl.truststore.type=PEM\n\
             ssl.truststore.location={ca}\n\
             listener.name.controller.ssl.client.auth=required\n\
             ssl.principal.mapping.rules=RULE:^.*CN=([a-zA-Z0-9._-]+).*$/$1/,DEFAULT\n\
             authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
             super.users=User:{KAFKA_ADMIN};User:{NODE_CN}\n\
             allow.everyone.if.no.acl.found=false\n",
            keystore = self.node_pem(node).display(),
            ca = self.ca().display(),
        ))
    }

    /// The security part of node `node`'s `cassandra.yaml`.
    pub fn cassandra_yaml(&self, node: u8) -> String {
        format!(
            "# Secured (cargo xtask --secure): passwords, roles and permissions, TLS between\n\
             # clients and nodes and between nodes.\n\
             authenticator: PasswordAuthenticator\n\
             authorizer: CassandraAuthorizer\n\
             role_manager: CassandraRoleManager\n\
             client_encryption_options:\n  \
               enabled: true\n  \
               optional: false\n  \
               ssl_context_factory:\n    \
                 class_name: org.apache.cassandra.security.PEMBasedSslContextFactory\n  \
               keystore: {pem}\n  \
               require_client_auth: false\n\
             server_encryption_options:\n  \
               internode_encryption: all\n  \
               ssl_context_factory:\n    \
                 class_name: org.apache.cassandra.security.PEMBasedSslContextFactory\n  \
               keystore: {pem}\n  \
               truststore: {ca}\n  \
               require_client_auth: true\n",
            pem = self.node_pem(node).display(),
            ca = self.ca().display(),
        )
    }
}

/// Runs one statement; its error names it (never the password it may hold).
async fn run(session: &Session, cql: String) -> anyhow::Result<()> {
    session
        .query_unpaged(cql.as_str(), &[])
        .await
        .with_context(|| cql.split(" PASSWORD").next().unwrap_or("").to_owned())?;
    Ok(())
}

/// Creates the pipeline's Cassandra roles (once per stack), as the default superuser: an
/// admin superuser for xtask, `pipeline_migrator` with CREATE on all keyspaces,
/// `cassandra_writer` and `analyst` with nothing yet (migrate grants them the keyspace), then
/// locks the default `cassandra` role. `system_auth` gets `replication` first, so that logins
/// survive node loss.
pub async fn setup_roles(
    security: &Security,
    nodes: &str,
    replication: &str,
) -> anyhow::Result<()> {
    if security.roles_ready() {
        return Ok(());
    }
    let session = security
        .cql_args(nodes, "system", None)
        .connect()
        .await
        .context("log in as the default superuser")?;
    run(
        &session,
        format!("ALTER KEYSPACE system_auth WITH replication = {replication}"),
    )
    .await?;
    // The default role's row is on one replica until repaired; a read at ALL repairs it, so a
    // QUORUM read of it (ALTER ROLE cassandra below) cannot miss it.
    let mut repair =
        scylla::statement::unprepared::Statement::new("SELECT role FROM system_auth.roles");
    repair.set_consistency(scylla::statement::Consistency::All);
    session
        .query_unpaged(repair, &[])
        .await
        .context("read system_auth.roles at ALL (read repair)")?;
    let password = |role| Security::read(&security.cql_password_file(role));
    run(
        &session,
        format!(
            "CREATE ROLE IF NOT EXISTS {CQL_ADMIN} WITH SUPERUSER = true AND LOGIN = true \
             AND PASSWORD = '{}'",
            password(CQL_ADMIN)?
        ),
    )
    .await?;
    drop(session);
    let admin = security
        .cql_args(nodes, "system", Some(CQL_ADMIN))
        .connect()
        .await
        .context("log in as the new admin role")?;
    for role in [CQL_MIGRATOR, CQL_WRITER, CQL_ANALYST] {
        run(
            &admin,
            format!(
                "CREATE ROLE IF NOT EXISTS {role} WITH LOGIN = true AND PASSWORD = '{}'",
                password(role)?
            ),
        )
        .await?;
    }
    run(
        &admin,
        format!("GRANT CREATE ON ALL KEYSPACES TO {CQL_MIGRATOR}"),
    )
    .await?;
    run(
        &admin,
        "ALTER ROLE cassandra WITH SUPERUSER = false AND LOGIN = false".to_owned(),
    )
    .await?;
    fs::write(security.secrets_dir().join("cql-roles-created"), "")?;
    Ok(())
}

/// The names one pipeline uses on Kafka, for its ACLs.
#[derive(Debug, Clone)]
pub struct PipelineNames {
    pub raw: String,
    pub valid: String,
    pub dlq: String,
    pub stats: String,
    pub alerts: String,
    /// The validated records keyed by destination, and the per-destination statistics.
    pub by_destination: String,
    pub target_stats: String,
    /// The stream-reader's validation, analytics and targets groups.
    pub reader_groups: Vec<String>,
    pub writer_group: String,
    /// Prefixes of the stream-reader's and the writer's transactional ids.
    pub reader_transactional_id: String,
    pub writer_transactional_id: String,
    /// How topic and group names match: literal names, or prefixes of them.
    pub pattern: Pattern,
}

impl PipelineNames {
    /// The services' defaults (`ip_logs`, …, groups `stream-reader*` and `cassandra-writer`,
    /// transactional ids `<group>@<host>:<pid>`).
    pub fn defaults() -> Self {
        use log_schema::topics;
        Self {
            raw: topics::RAW.into(),
            valid: topics::VALIDATED.into(),
            dlq: topics::DLQ.into(),
            stats: topics::STATS.into(),
            alerts: topics::ALERTS.into(),
            by_destination: topics::BY_DESTINATION.into(),
            target_stats: topics::TARGET_STATS.into(),
            reader_groups: vec![
                "stream-reader".into(),
                "stream-reader-analytics".into(),
                "stream-reader-targets".into(),
            ],
            writer_group: "cassandra-writer".into(),
            reader_transactional_id: "stream-reader".into(),
            writer_transactional_id: "cassandra-writer".into(),
            pattern: Pattern::Literal,
        }
    }
}

/// Least privilege per service:
/// * `producer`: write the raw topic;
/// * `stream-reader`: read the raw, validated and by-destination topics and its groups, write
///   the validated, DLQ, stats, alerts, by-destination and target stats topics, its
///   transactional ids;
/// * `cassandra-writer`: read the validated, stats, target stats and alerts topics and its
///   group, write the DLQ, its transactional ids;
/// * `operator` (`producer dlq …`, `producer replay`): read the DLQ and the raw topic, write
///   the raw and validated topics (re-submission), groups `producer-…`.
///
/// Topic describe-configs rights go with write (the services read `max.message.bytes`).
pub fn pipeline_acls(n: &PipelineNames) -> Vec<Acl> {
    use Resource::{Group, Topic, TransactionalId};
    let p = n.pattern;
    let readers =
        |user: &str, topics: &[&str]| Acl::allow(user, Topic, p, topics, &[Op::Read, Op::Describe]);
    let writers = |user: &str, topics: &[&str]| {
        Acl::allow(
            user,
            Topic,
            p,
            topics,
            &[Op::Write, Op::Describe, Op::DescribeConfigs],
        )
    };
    let groups: Vec<&str> = n.reader_groups.iter().map(String::as_str).collect();
    let mut acls = writers("producer", &[&n.raw]);
    acls.extend(readers(
        "stream-reader",
        &[&n.raw, &n.valid, &n.by_destination],
    ));
    acls.extend(writers(
        "stream-reader",
        &[
            &n.valid,
            &n.dlq,
            &n.stats,
            &n.alerts,
            &n.by_destination,
            &n.target_stats,
        ],
    ));
    acls.extend(Acl::allow("stream-reader", Group, p, &groups, &[Op::Read]));
    acls.extend(Acl::allow(
        "stream-reader",
        TransactionalId,
        Pattern::Prefixed,
        &[&n.reader_transactional_id],
        &[Op::Write, Op::Describe],
    ));
    acls.extend(readers(
        "cassandra-writer",
        &[&n.valid, &n.stats, &n.target_stats, &n.alerts],
    ));
    acls.extend(writers("cassandra-writer", &[&n.dlq]));
    acls.extend(Acl::allow(
        "cassandra-writer",
        Group,
        p,
        &[&n.writer_group],
        &[Op::Read],
    ));
    acls.extend(Acl::allow(
        "cassandra-writer",
        TransactionalId,
        Pattern::Prefixed,
        &[&n.writer_transactional_id],
        &[Op::Write, Op::Describe],
    ));
    acls.extend(readers("operator", &[&n.dlq, &n.raw]));
    acls.extend(writers("operator", &[&n.raw, &n.valid]));
    acls.extend(Acl::allow(
        "operator",
        Group,
        Pattern::Prefixed,
        &["producer-"],
        &[Op::Read],
    ));
    acls
}

//! Schema migrations: numbered `.cql` files from `migrations/`, embedded in the binary.
//!
//! `cassandra-writer migrate` creates the keyspace (replication from config), then applies every
//! migration not yet recorded in `<keyspace>.schema_migrations`, recording version, name and
//! SHA-256 checksum. It is idempotent, and it refuses to run when an applied file has changed:
//! an applied migration is history, a change needs a new file.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail, ensure};
use chrono::Utc;
use clap::Args;
use pipeline_runtime::{
    cassandra::{CassandraArgs, parse_identifier},
    telemetry::TelemetryArgs,
};
use scylla::{client::session::Session, errors::ExecutionError};
use sha2::{Digest, Sha256};
use tracing::info;

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Number from the file name.
    pub version: i32,
    /// File name.
    pub name: &'static str,
    /// File content.
    pub cql: &'static str,
}

/// Every migration, in order. A test checks this list against the `migrations/` directory.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_access_logs.cql",
        cql: include_str!("../../../migrations/0001_access_logs.cql"),
    },
    Migration {
        version: 2,
        name: "0002_analytics.cql",
        cql: include_str!("../../../migrations/0002_analytics.cql"),
    },
    Migration {
        version: 3,
        name: "0003_window_caps.cql",
        cql: include_str!("../../../migrations/0003_window_caps.cql"),
    },
    Migration {
        version: 4,
        name: "0004_geoip.cql",
        cql: include_str!("../../../migrations/0004_geoip.cql"),
    },
    Migration {
        version: 5,
        name: "0005_bounded_partitions.cql",
        cql: include_str!("../../../migrations/0005_bounded_partitions.cql"),
    },
    Migration {
        version: 6,
        name: "0006_threat_lists.cql",
        cql: include_str!("../../../migrations/0006_threat_lists.cql"),
    },
    Migration {
        version: 7,
        name: "0007_target_windows.cql",
        cql: include_str!("../../../migrations/0007_target_windows.cql"),
    },
];

impl Migration {
    /// Hex SHA-256 of the file.
    pub fn checksum(&self) -> String {
        Sha256::digest(self.cql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The file's statements: `--` comments removed, split on `;`, blank ones dropped.
    /// (Our migrations hold no `;` inside string literals.)
    pub fn statements(&self) -> Vec<String> {
        let without_comments: String = self
            .cql
            .lines()
            .map(|l| match l.find("--") {
                Some(i) => &l[..i],
                None => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        without_comments
            .split(';')
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// Options of `cassandra-writer migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Cassandra connection.
    #[command(flatten)]
    pub cassandra: CassandraArgs,

    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    /// Replication of the keyspace when migrate creates it (production: NetworkTopologyStrategy
    /// with 3 replicas per DC, e.g. {'class': 'NetworkTopologyStrategy', 'datacenter1': 3}).
    #[arg(
        long,
        env = "CASSANDRA_REPLICATION",
        default_value = "{'class': 'SimpleStrategy', 'replication_factor': 1}",
        value_parser = parse_replication
    )]
    pub replication: String,

    /// Roles granted SELECT and MODIFY on the keyspace once it is migrated (comma-separated;
    /// the writer's role, e.g. `cassandra_writer`). Needs authorization enabled and a migrating
    /// role that may grant on the keyspace (its creator may).
    #[arg(long, env = "CASSANDRA_GRANT_WRITE_TO", value_delimiter = ',', value_parser = parse_identifier)]
    pub grant_write_to: Vec<String>,

    /// Roles granted SELECT on the keyspace once it is migrated (comma-separated; analysts).
    #[arg(long, env = "CASSANDRA_GRANT_READ_TO", value_delimiter = ',', value_parser = parse_identifier)]
    pub grant_read_to: Vec<String>,

    /// Tables a pending migration may drop although they hold rows (comma-separated; see the
    /// upgrade runbook: 0005 replaces access_logs, alerts_by_day and alerts_by_ip). Without it,
    /// migrate stops before dropping a table that holds rows.
    #[arg(long, env = "CASSANDRA_MIGRATE_ALLOW_DROP", value_delimiter = ',', value_parser = parse_identifier)]
    pub allow_drop: Vec<String>,

    /// Retention of raw rows (`access_logs`), in days: the table's default TTL, set on every
    /// migrate (rows keep the TTL they were written with). 0 keeps rows forever.
    #[arg(long, env = "CASSANDRA_ACCESS_LOGS_TTL_DAYS", default_value_t = 30)]
    pub access_logs_ttl_days: u32,

    /// Retention of window statistics (`ip_stats_by_ip`, `target_stats_by_ip` and the
    /// `top_talkers_*` and `top_targets_by_minute` tables), in days (0 = forever).
    #[arg(long, env = "CASSANDRA_STATS_TTL_DAYS", default_value_t = 90)]
    pub stats_ttl_days: u32,

    /// Retention of alerts (`alerts`, `target_alerts`), in days (0 = forever).
    #[arg(long, env = "CASSANDRA_ALERTS_TTL_DAYS", default_value_t = 365)]
    pub alerts_ttl_days: u32,
}

impl MigrateArgs {
    /// Each table's configured default TTL, in seconds.
    pub fn retention(&self) -> Vec<(&'static str, u32)> {
        let secs = |days: u32| days.saturating_mul(86_400);
        let (raw, stats, alerts) = (
            secs(self.access_logs_ttl_days),
            secs(self.stats_ttl_days),
            secs(self.alerts_ttl_days),
        );
        vec![
            ("access_logs", raw),
            ("ip_stats_by_ip", stats),
            ("top_talkers_by_minute", stats),
            ("top_talkers_by_country_minute", stats),
            ("top_talkers_by_asn_minute", stats),
            ("target_stats_by_ip", stats),
            ("top_targets_by_minute", stats),
            ("alerts", alerts),
            ("target_alerts", alerts),
        ]
    }
}

/// A replication map literal: only `{}`, quotes, `:`, `,`, spaces, letters, digits, `_`, `.`.
fn parse_replication(s: &str) -> Result<String, String> {
    let ok = s.trim().starts_with('{')
        && s.trim().ends_with('}')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "{}':, _.".contains(c));
    if ok {
        Ok(s.trim().to_owned())
    } else {
        Err(format!(
            "{s:?} is not a replication map like {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
        ))
    }
}

/// True when a CQL request failed for a reason outside the request (unavailable replicas,
/// timeouts, overload, connection trouble): the same request may succeed later.
pub fn is_transient(error: &anyhow::Error) -> bool {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<ExecutionError>())
        .is_some_and(|e| !crate::execute::is_rejection(e))
}

async fn applied(
    session: &Session,
    keyspace: &str,
) -> anyhow::Result<BTreeMap<i32, (String, String)>> {
    let rows = session
        .query_unpaged(
            format!("SELECT version, name, checksum FROM {keyspace}.schema_migrations"),
            &[],
        )
        .await
        .context("read schema_migrations")?
        .into_rows_result()
        .context("read schema_migrations")?;
    let mut out = BTreeMap::new();
    for row in rows
        .rows::<(i32, String, String)>()
        .context("decode schema_migrations")?
    {
        let (version, name, checksum) = row.context("decode schema_migrations row")?;
        out.insert(version, (name, checksum));
    }
    Ok(out)
}

/// Applies the pending migrations. Returns how many were applied.
pub async fn migrate(args: &MigrateArgs) -> anyhow::Result<usize> {
    let ks = &args.cassandra.keyspace;
    let session = args.cassandra.connect().await?;
    session
        .query_unpaged(
            format!(
                "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {}",
                args.replication
            ),
            &[],
        )
        .await
        .with_context(|| format!("create keyspace {ks}"))?;
    session
        .query_unpaged(
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (version int PRIMARY KEY, \
                 name text, checksum text, applied_at timestamp)"
            ),
            &[],
        )
        .await
        .context("create schema_migrations")?;
    session
        .use_keyspace(ks, false)
        .await
        .with_context(|| format!("use keyspace {ks}"))?;
    let done = applied(&session, ks).await?;
    check_unchanged(&done)?;
    let pending: Vec<&Migration> = MIGRATIONS
        .iter()
        .filter(|m| !done.contains_key(&m.version))
        .collect();
    check_drops(&session, ks, &pending, &args.allow_drop).await?;
    let mut count = 0;
    for m in pending {
        for statement in m.statements() {
            session
                .query_unpaged(statement.as_str(), &[])
                .await
                .with_context(|| format!("migration {} failed at: {statement}", m.name))?;
        }
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {ks}.schema_migrations (version, name, checksum, applied_at) \
                     VALUES (?, ?, ?, ?)"
                ),
                (m.version, m.name, m.checksum(), Utc::now()),
            )
            .await
            .with_context(|| format!("record migration {}", m.name))?;
        info!(version = m.version, name = m.name, "migration applied");
        count += 1;
    }
    info!(keyspace = %ks, applied = count, total = MIGRATIONS.len(), "schema is up to date");
    set_retention(&session, ks, &args.retention()).await?;
    let grants = args
        .grant_write_to
        .iter()
        .flat_map(|role| [("SELECT", role), ("MODIFY", role)])
        .chain(args.grant_read_to.iter().map(|role| ("SELECT", role)));
    for (permission, role) in grants {
        session
            .query_unpaged(
                format!("GRANT {permission} ON KEYSPACE {ks} TO {role}"),
                &[],
            )
            .await
            .with_context(|| {
                format!(
                    "grant {permission} on keyspace {ks} to role {role} (CASSANDRA_GRANT_WRITE_TO, \
                     CASSANDRA_GRANT_READ_TO)"
                )
            })?;
        info!(keyspace = %ks, %role, permission, "granted");
    }
    Ok(count)
}

/// The tables a migration drops (`DROP TABLE [IF EXISTS] name`).
fn dropped_tables(m: &Migration) -> Vec<String> {
    m.statements()
        .iter()
        .filter_map(|s| {
            let words: Vec<&str> = s.split_whitespace().collect();
            match words.as_slice() {
                ["DROP", "TABLE", "IF", "EXISTS", table] | ["DROP", "TABLE", table] => {
                    Some((*table).to_owned())
                }
                _ => None,
            }
        })
        .collect()
}

/// Stops before a pending migration drops a table that holds rows, unless `allowed` names it.
async fn check_drops(
    session: &Session,
    ks: &str,
    pending: &[&Migration],
    allowed: &[String],
) -> anyhow::Result<()> {
    let existing: Vec<String> = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
            (ks,),
        )
        .await
        .context("read the keyspace's tables")?
        .into_rows_result()
        .context("read the keyspace's tables")?
        .rows::<(String,)>()
        .context("decode table names")?
        .map(|r| r.map(|(t,)| t))
        .collect::<Result<_, _>>()
        .context("decode table names")?;
    for m in pending {
        let mut refused = Vec::new();
        for table in dropped_tables(m) {
            if !existing.contains(&table) || allowed.contains(&table) {
                continue;
            }
            let has_rows = session
                .query_unpaged(format!("SELECT * FROM {ks}.{table} LIMIT 1"), &[])
                .await
                .with_context(|| format!("check whether {ks}.{table} holds rows"))?
                .into_rows_result()
                .with_context(|| format!("check whether {ks}.{table} holds rows"))?
                .rows_num()
                > 0;
            if has_rows {
                refused.push(table);
            }
        }
        if !refused.is_empty() {
            bail!(
                "migration {} replaces tables that hold rows: {}; their rows would be dropped \
                 (Cassandra keeps a snapshot of a dropped table while auto_snapshot is on). \
                 Follow README \"Upgrading an existing keyspace\": confirm with \
                 CASSANDRA_MIGRATE_ALLOW_DROP={}, then backfill with `producer replay`",
                m.name,
                refused.join(", "),
                refused.join(",")
            );
        }
    }
    Ok(())
}

/// Sets each table's default TTL to the configured retention where it differs (a schema
/// change only when needed; rows already written keep their TTL).
async fn set_retention(session: &Session, ks: &str, tables: &[(&str, u32)]) -> anyhow::Result<()> {
    for &(table, ttl) in tables {
        let current = session
            .query_unpaged(
                "SELECT default_time_to_live FROM system_schema.tables \
                 WHERE keyspace_name = ? AND table_name = ?",
                (ks, table),
            )
            .await
            .with_context(|| format!("read the TTL of {ks}.{table}"))?
            .into_rows_result()
            .with_context(|| format!("read the TTL of {ks}.{table}"))?
            .maybe_first_row::<(i32,)>()
            .with_context(|| format!("decode the TTL of {ks}.{table}"))?
            .with_context(|| format!("table {ks}.{table} is missing"))?
            .0;
        if i64::from(current) == i64::from(ttl) {
            continue;
        }
        session
            .query_unpaged(
                format!("ALTER TABLE {ks}.{table} WITH default_time_to_live = {ttl}"),
                &[],
            )
            .await
            .with_context(|| format!("set the retention of {ks}.{table}"))?;
        info!(
            table,
            from_secs = current,
            to_secs = ttl,
            "retention changed"
        );
    }
    Ok(())
}

fn check_unchanged(done: &BTreeMap<i32, (String, String)>) -> anyhow::Result<()> {
    for m in MIGRATIONS {
        if let Some((name, checksum)) = done.get(&m.version)
            && *checksum != m.checksum()
        {
            bail!(
                "migration {} was changed after it was applied as {name} (checksum {checksum} in \
                 the database, {} in this binary); never edit an applied migration, add a new one",
                m.name,
                m.checksum()
            );
        }
    }
    Ok(())
}

/// Fails with a clear message unless every migration of this binary is applied, unchanged.
///
/// An error that [`is_transient`] (Cassandra unavailable, overloaded, timing out or not
/// reachable) says nothing about the schema; callers may retry it.
pub async fn verify(session: &Session, keyspace: &str) -> anyhow::Result<()> {
    let hint = "run `cassandra-writer migrate` first";
    let done = match applied(session, keyspace).await {
        Ok(done) => done,
        Err(e) if is_refused(&e) => {
            return Err(e.context(format!(
                "the writer's role (CASSANDRA_USERNAME) may not read keyspace {keyspace}: \
                 GRANT SELECT, MODIFY ON KEYSPACE {keyspace} TO it (or migrate with \
                 CASSANDRA_GRANT_WRITE_TO=<role>)"
            )));
        }
        Err(e) if is_transient(&e) => {
            return Err(e.context(format!(
                "cannot read {keyspace}.schema_migrations at the configured consistency"
            )));
        }
        Err(e) => {
            return Err(e.context(format!(
                "the schema of keyspace {keyspace} is missing; {hint}"
            )));
        }
    };
    check_unchanged(&done)?;
    let missing: Vec<&str> = MIGRATIONS
        .iter()
        .filter(|m| !done.contains_key(&m.version))
        .map(|m| m.name)
        .collect();
    ensure!(
        missing.is_empty(),
        "migrations not applied to {keyspace}: {missing:?}; {hint}"
    );
    Ok(())
}

/// True when the server refused the request for this user's lack of permission.
fn is_refused(error: &anyhow::Error) -> bool {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<ExecutionError>())
        .is_some_and(crate::execute::is_refusal)
}

/// Fails with a clear message when the session's role may not write rows to `keyspace`: a
/// conditional update of an `access_logs` row that never exists (empty source, epoch, nil
/// id) is authorized like the writer's writes (MODIFY on the table) but changes nothing. Any
/// other outcome (not applied, unavailable replicas, a timeout) means the authorization passed.
/// Permissions granted table by table on the other tables are checked by their first write.
pub async fn check_write_permission(session: &Session, keyspace: &str) -> anyhow::Result<()> {
    let probe = format!(
        "UPDATE {keyspace}.access_logs SET action = 'permission probe' WHERE source_ip = '' \
         AND bucket = 0 AND timestamp = 0 AND event_id = 00000000-0000-0000-0000-000000000000 \
         IF EXISTS"
    );
    match session.query_unpaged(probe, &[]).await {
        Err(e) if crate::execute::is_refusal(&e) => Err(anyhow::Error::new(e).context(format!(
            "the writer's role (CASSANDRA_USERNAME) may not write to keyspace {keyspace}: \
             GRANT MODIFY ON KEYSPACE {keyspace} TO it (or migrate with \
             CASSANDRA_GRANT_WRITE_TO=<role>)"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_migrations_is_embedded_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cql"))
            .collect();
        files.sort();
        let embedded: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, embedded);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
            assert!(!m.statements().is_empty());
        }
    }

    #[test]
    fn statements_drop_comments() {
        let m = Migration {
            version: 9,
            name: "x",
            cql: "-- a; b\nCREATE TABLE t (a int PRIMARY KEY); -- c\n\n",
        };
        assert_eq!(m.statements(), vec!["CREATE TABLE t (a int PRIMARY KEY)"]);
    }

    #[test]
    fn the_bounded_partitions_migration_drops_the_three_old_tables() {
        assert_eq!(
            dropped_tables(&MIGRATIONS[4]),
            vec!["access_logs", "alerts_by_day", "alerts_by_ip"]
        );
        assert!(MIGRATIONS[..4].iter().all(|m| dropped_tables(m).is_empty()));
    }

    #[test]
    fn replication_is_a_map_literal_only() {
        assert!(parse_replication("{'class': 'SimpleStrategy', 'replication_factor': 1}").is_ok());
        assert!(parse_replication("{'class': 'NetworkTopologyStrategy', 'dc1': 3}").is_ok());
        assert!(parse_replication("{'class': 'x'}; DROP KEYSPACE y").is_err());
    }
}

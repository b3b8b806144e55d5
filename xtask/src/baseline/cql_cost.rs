//! Cassandra's CPU per row for three ways of sending the same rows (one insert per row into
//! our table, into the seed's table, the Spark connector's grouping into single-partition unlogged batches).

use super::*;

/// How a [`cql_cost`] variant sends its rows.
#[derive(Debug, Clone, Copy)]
pub(super) enum Send {
    /// One prepared insert per row into our `access_logs`.
    OursSingle,
    /// Our `access_logs`, rows grouped as the Spark Cassandra Connector groups them by default
    /// (batches keyed by partition, sent at 1,024 bytes of bound values, at most 1,000 open:
    /// `bench::writes::connector_batches`).
    OursConnectorBatches,
    /// One prepared insert per row into the seed's 9-column `access_logs`.
    SeedSingle,
}

/// Cassandra's CPU µs per row for the same rows sent each way (256 requests in flight): what
/// caps the drain, and what batching by partition would change.
pub(super) async fn cql_cost(
    stack: &Stack,
    rows: &[ValidatedRecord],
) -> anyhow::Result<Vec<(Send, f64, f64)>> {
    use scylla::statement::batch::{Batch, BatchType};
    let cassandra = stack.pid(Server::Cassandra).unwrap_or(0);
    let mut out = Vec::new();
    for send in [
        Send::OursSingle,
        Send::OursConnectorBatches,
        Send::SeedSingle,
    ] {
        let keyspace = format!("bench_cql_{}", out.len());
        let env = stack.env_with(&[("CASSANDRA_KEYSPACE", &keyspace)]);
        let seed = matches!(send, Send::SeedSingle);
        if seed {
            seed_table(stack, &keyspace).await?;
        } else {
            bench::migrate(&env)?;
        }
        let session = CassandraArgs::new(stack.cql_addr(), &keyspace)
            .connect()
            .await?;
        let stmt = session
            .prepare(if seed {
                format!(
                    "INSERT INTO {keyspace}.access_logs (timestamp, source_ip, destination_ip, \
                     port, protocol, bytes_sent, bytes_received, action, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                )
            } else {
                cassandra_writer::writer::insert_cql(&keyspace)
            })
            .await?;
        // Requests: groups of row indexes.
        let groups: Vec<Vec<&ValidatedRecord>> = match send {
            Send::OursConnectorBatches => crate::bench::connector_batches(rows, &stmt)?,
            _ => rows.iter().map(|r| vec![r]).collect(),
        };
        let before = process_cpu_secs(cassandra);
        let start = Instant::now();
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(groups.iter().map(|group| {
            let (session, stmt) = (&session, &stmt);
            async move {
                if seed {
                    let r = group[0];
                    let v = (
                        r.timestamp,
                        r.source_ip.to_string(),
                        r.destination_ip.to_string(),
                        i32::from(r.port),
                        r.protocol.as_str(),
                        r.bytes_sent,
                        r.bytes_received,
                        r.action.as_str(),
                        Utc::now(),
                    );
                    session.execute_unpaged(stmt, v).await?;
                } else if group.len() == 1 {
                    let v = cassandra_writer::writer::access_log_row(group[0]);
                    session.execute_unpaged(stmt, v).await?;
                } else {
                    let mut batch = Batch::new(BatchType::Unlogged);
                    for _ in group {
                        batch.append_statement(stmt.clone());
                    }
                    let values: Vec<_> = group
                        .iter()
                        .map(|r| cassandra_writer::writer::access_log_row(r))
                        .collect();
                    session.batch(&batch, values).await?;
                }
                Ok(())
            }
        }))
        .buffer_unordered(256)
        .collect()
        .await;
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        let rows_per_s = rows.len() as f64 / start.elapsed().as_secs_f64();
        let us = (process_cpu_secs(cassandra) - before) * 1e6 / rows.len() as f64;
        println!(
            "  {send:?}: {} requests, {rows_per_s:.0} rows/s, Cassandra {us:.1} µs CPU per row",
            groups.len()
        );
        out.push((send, rows_per_s, us));
    }
    Ok(out)
}

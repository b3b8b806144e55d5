//! cassandra-writer: persists validated IP logs into Cassandra, and owns the schema
//! (`cassandra-writer migrate`).
//!
//! See [`writer`] for the consume loop and its delivery guarantee; [`config`] is its command
//! line, [`rows`] what it writes, [`metrics`] what it reports.

mod committer;
pub mod config;
mod dead_letter;
mod execute;
mod group;
pub mod metrics;
pub mod migrate;
pub mod rows;
mod shared;
mod webhook;
mod write;
pub mod writer;

use clap::{Parser, Subcommand};

pub use migrate::{MigrateArgs, migrate};
pub use writer::{WriterArgs, run};

/// Command line of the `cassandra-writer` binary.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (default: run the writer).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Writer options (when no subcommand is given).
    #[command(flatten)]
    pub writer: WriterArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the keyspace and apply pending schema migrations, then exit.
    Migrate(MigrateArgs),
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}

//! The shared runtime of the three pipeline services, written once: Kafka client construction
//! ([`kafka`]), CQL session construction ([`cassandra`]), tracing setup ([`telemetry`]) and
//! signal-driven shutdown ([`shutdown`]). Every option is a clap `Args` struct that a service
//! flattens into its own config, so flags and environment variables are the same everywhere.

pub mod cassandra;
pub mod kafka;
pub mod observe;
pub mod secret;
pub mod shutdown;
pub mod telemetry;

pub use secret::Secret;

//! The shared runtime of the three pipeline services, written once: Kafka client construction
//! ([`kafka`]), CQL session construction ([`cassandra`]), tracing setup ([`telemetry`]) and
//! signal-driven shutdown ([`shutdown`]). Every option is a clap `Args` struct that a service
//! flattens into its own config, so flags and environment variables are the same everywhere.

pub mod cassandra;
pub mod enums;
pub mod failure;
pub mod kafka;
pub mod observe;
pub mod renamed;
pub mod secret;
pub mod shutdown;
pub mod stage;
pub mod telemetry;
pub mod transaction;

/// Runs a blocking call (a synchronous commit, a producer flush) without stalling the other
/// tasks of a multi-threaded runtime: the worker hands its queued tasks to another thread for
/// the call's duration (`block_in_place`). Outside such a runtime (a plain thread, librdkafka's
/// own threads, a current-thread runtime) it simply runs the call.
pub fn run_blocking<R>(call: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(call)
        }
        _ => call(),
    }
}

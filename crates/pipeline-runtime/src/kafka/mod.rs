//! Kafka clients, configured once for every service.
//!
//! Only the Kafka protocol is assumed: nothing here knows which broker implementation answers.
//!
//! - [`config`]: `KafkaArgs` (servers, security, options) and the clients built from them;
//! - [`offsets`]: contiguous per-partition progress, storing and committing offsets;
//! - [`context`]: `PipelineContext`, what a consumer does on rebalances and statistics;
//! - [`backpressure`]: bounded in-flight work.

pub mod access;
pub mod backpressure;
pub mod config;
pub mod context;
pub mod offsets;

pub use backpressure::Backpressure;
pub use config::{KafkaArgs, KafkaOption, SecurityProtocol};
pub use context::{Lags, PartitionChange, PartitionChanges, PipelineContext, brokers_up};
pub use offsets::{
    Checkpoints, OffsetTracker, SharedTracker, commit_checkpoints, committed_with_metadata,
    complete_and_store, final_commit, store_next_offset,
};

//! Integration tests against the real local Kafka-API broker and CQL server.
//!
//! Run them with `cargo xtask test`, which starts a stack of its own and passes its addresses
//! in `IT_KAFKA_BROKER` / `IT_CASSANDRA_NODES`. Every test uses fresh topics and a fresh
//! keyspace, polls with deadlines, and reads its data back. A server that is not there is a
//! test failure with a message saying so, never a skip.

mod analytics;
mod cassandra;
mod cookbook;
mod data_model;
mod deploy;
mod exact;
mod exactly_once;
mod file_ingest;
mod formats;
mod geoip;
mod hardening;
mod hostile;
mod kafka;
mod monitoring;
mod observability;
mod ops;
mod producer;
mod reader;
mod secured;
mod security;
mod support;
mod threats;
mod trust;
mod webhook;
mod writer;

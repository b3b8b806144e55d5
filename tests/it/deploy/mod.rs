//! The deployment files agree with the code. Pure: reads files, needs no server.
//!
//! * docker-compose.yml builds only stages that docker/Dockerfile defines, and names each image
//!   after its Dockerfile target, the way the CI pushes them;
//! * the Dockerfile builds and copies the three services' binaries only (never xtask, the development tooling),
//!   and each service image holds its own binary on the slim runtime base, as a non-root user;
//! * every environment variable that compose or the Dockerfile gives a service is one that its
//!   command line reads (clap `env`), RUST_LOG aside (read by tracing's `EnvFilter`), and none is
//!   set to an empty string (an empty `KAFKA_OPTIONS` is rejected: optional ones stay unset);
//!   conversely, compose lists every setting of each service, so that all can be set from the
//!   environment;
//! * kafka-init creates exactly `log_schema::topics::ALL`, which holds every topic the services
//!   use by default;
//! * the production setup (no profile) has no default for the clusters' addresses
//!   (`${KAFKA_BROKER:?...}`), and docker/local.env and docker/cluster.env point them at the
//!   Kafka and Cassandra services of the `local` profile and of docker/compose.cluster.yml (with
//!   replication factor 3 there);
//! * the profiles: stream-reader and cassandra-writer in every setup, the synthetic producer in
//!   `demo`, the infrastructure and one-shots in `local`; a dependency on a service that a setup
//!   may leave out is `required: false`;
//! * the services can be scaled (no container name, no host port) and are hardened;
//! * the builder image pins the Rust toolchain the CI tests with;
//! * the deploy ships every file compose mounts, and Prometheus finds its rules both in the
//!   container and next to the checked configuration;
//! * .dockerignore keeps the workspace sources in the build context and local state out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use serde_yaml_ng::{Mapping, Value};

/// The services that have an image; each is a Dockerfile target, a package and a binary.
pub(super) const SERVICES: [&str; 3] = ["producer", "stream-reader", "cassandra-writer"];
/// Environment variables our services read outside clap: tracing's `EnvFilter`.
pub(super) const EXTRA_ENV: [&str; 1] = ["RUST_LOG"];
/// Development only: never in an image.
pub(super) const DEV_ONLY: &str = "xtask";
/// The runtime base of the service images.
pub(super) const RUNTIME_BASE: &str = "debian:bookworm-slim";

pub(super) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned()
}

pub(super) fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

// ------------------------------------------------------------------------------------ compose

pub(super) fn compose() -> Value {
    let mut doc: Value =
        serde_yaml_ng::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML");
    doc.apply_merge()
        .expect("docker-compose.yml merge keys (<<) resolve");
    doc
}

pub(super) fn services(doc: &Value) -> &Mapping {
    doc.get("services")
        .and_then(Value::as_mapping)
        .expect("docker-compose.yml has a services mapping")
}

pub(super) fn service<'a>(doc: &'a Value, name: &str) -> &'a Value {
    services(doc)
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
}

pub(super) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

pub(super) fn names(services: &Mapping) -> impl Iterator<Item = (String, &Value)> {
    services.iter().map(|(k, v)| (text(k), v))
}

/// A service's `environment`, map or list form; `None` for a pass-through (no value).
pub(super) fn environment(service: &Value) -> BTreeMap<String, Option<String>> {
    match service.get("environment") {
        None => BTreeMap::new(),
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| (text(k), (!v.is_null()).then(|| text(v))))
            .collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|item| {
                let item = text(item);
                match item.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (item, None),
                }
            })
            .collect(),
        Some(other) => panic!("environment is neither a map nor a list: {other:?}"),
    }
}

/// `NAME` when `s` is exactly `${NAME:?message}` (or `${NAME?message}`): a value compose
/// refuses to run without.
pub(super) fn required(s: &str) -> Option<&str> {
    let expr = s.strip_prefix("${")?.strip_suffix('}')?;
    let end = expr.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    let (name, op) = expr.split_at(end);
    (op.starts_with(":?") || op.starts_with('?')).then_some(name)
}

/// The value compose gives when no variable is set: `${A:-x}` and `${A-x}` become `x`, `${A}`,
/// `$A`, `${A:+x}` become empty (as does `${A:?message}`, which compose refuses instead: see
/// [`required`]), `$$` is a literal `$`.
pub(super) fn with_defaults(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {s:?}"));
            let expr = &r[..end];
            let name_end = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let op = &expr[name_end..];
            if let Some(default) = op.strip_prefix(":-").or_else(|| op.strip_prefix('-')) {
                out.push_str(default);
            }
            rest = &r[end + 1..];
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// `(Dockerfile target, subcommand)` of a compose service that runs one of our images.
pub(super) fn our_image(name: &str, service: &Value) -> Option<(String, Option<String>)> {
    let image = service.get("image").map(text).unwrap_or_default();
    let build = service.get("build");
    if build.is_none() && !image.contains("DOCKER_REGISTRY_URL") {
        return None;
    }
    let build =
        build.unwrap_or_else(|| panic!("service {name} runs our image {image} but has no build"));
    let target = build
        .get("target")
        .map(text)
        .unwrap_or_else(|| panic!("service {name}: build has no target"));
    let sub = match service.get("command") {
        Some(Value::Sequence(args)) => args.first().map(text),
        Some(Value::String(s)) => s.split_whitespace().next().map(str::to_owned),
        _ => None,
    }
    .filter(|first| !first.starts_with('-'));
    Some((target, sub))
}

/// A compose file other than docker-compose.yml (merge keys resolved).
pub(super) fn compose_file(rel: &str) -> Value {
    let mut doc: Value =
        serde_yaml_ng::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is YAML: {e}"));
    doc.apply_merge()
        .unwrap_or_else(|e| panic!("{rel} merge keys (<<) resolve: {e}"));
    doc
}

/// A service's `profiles`.
pub(super) fn profiles(service: &Value) -> BTreeSet<String> {
    service
        .get("profiles")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .map(text)
        .collect()
}

/// Every variable that a string of the file requires (`${NAME:?message}`).
pub(super) fn required_vars(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) => {
            for rest in s.split("${").skip(1) {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let (name, op) = rest.split_at(end);
                if op.starts_with(":?") || op.starts_with('?') {
                    out.insert(name.to_owned());
                }
            }
        }
        Value::Sequence(items) => items.iter().for_each(|i| required_vars(i, out)),
        Value::Mapping(m) => m.values().for_each(|i| required_vars(i, out)),
        _ => {}
    }
}

/// The `KEY=VALUE` lines of an env file for `docker compose --env-file` (comments and blank
/// lines skipped, one pair of double quotes removed).
pub(super) fn env_file(rel: &str) -> BTreeMap<String, String> {
    read(rel)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{rel}: not KEY=VALUE: {l}"));
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The `rust:` image of the first `FROM rust:...` line of a Dockerfile.
pub(super) fn rust_from(dockerfile: &str) -> Option<String> {
    dockerfile.lines().find_map(|l| {
        l.trim()
            .strip_prefix("FROM ")?
            .split_whitespace()
            .find(|w| w.starts_with("rust:"))
            .map(str::to_owned)
    })
}

// ------------------------------------------------------------------------------------ clap

/// `env` name -> default values of every argument of a command line.
pub(super) fn clap_env(cmd: &clap::Command) -> BTreeMap<String, Vec<String>> {
    cmd.get_arguments()
        .filter_map(|arg| {
            let name = arg.get_env()?.to_str()?.to_owned();
            let defaults = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            Some((name, defaults))
        })
        .collect()
}

/// The settings of a service binary (or of one of its subcommands).
pub(super) fn settings(target: &str, sub: Option<&str>) -> BTreeMap<String, Vec<String>> {
    let cmd = match target {
        "producer" => producer::Cli::command(),
        "stream-reader" => stream_reader::ReaderArgs::command(),
        "cassandra-writer" => cassandra_writer::Cli::command(),
        other => panic!("{other} is not one of the services {SERVICES:?}"),
    };
    match sub {
        None => clap_env(&cmd),
        Some(sub) => clap_env(
            cmd.find_subcommand(sub)
                .unwrap_or_else(|| panic!("{target} has no subcommand {sub}")),
        ),
    }
}

mod compose;
mod image;
mod production;

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
//!   use by default, and the services' broker and CQL addresses are the compose services';
//! * the services can be scaled (no container name, no host port) and are hardened;
//! * .dockerignore keeps the workspace sources in the build context and local state out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use serde_yaml_ng::{Mapping, Value};

/// The services that have an image; each is a Dockerfile target, a package and a binary.
const SERVICES: [&str; 3] = ["producer", "stream-reader", "cassandra-writer"];
/// Environment variables our services read outside clap: tracing's `EnvFilter`.
const EXTRA_ENV: [&str; 1] = ["RUST_LOG"];
/// Development only: never in an image.
const DEV_ONLY: &str = "xtask";
/// The runtime base of the service images.
const RUNTIME_BASE: &str = "debian:bookworm-slim";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

// ------------------------------------------------------------------------------------ compose

fn compose() -> Value {
    let mut doc: Value =
        serde_yaml_ng::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML");
    doc.apply_merge()
        .expect("docker-compose.yml merge keys (<<) resolve");
    doc
}

fn services(doc: &Value) -> &Mapping {
    doc.get("services")
        .and_then(Value::as_mapping)
        .expect("docker-compose.yml has a services mapping")
}

fn service<'a>(doc: &'a Value, name: &str) -> &'a Value {
    services(doc)
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

fn names(services: &Mapping) -> impl Iterator<Item = (String, &Value)> {
    services.iter().map(|(k, v)| (text(k), v))
}

/// A service's `environment`, map or list form; `None` for a pass-through (no value).
fn environment(service: &Value) -> BTreeMap<String, Option<String>> {
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

/// The value compose gives when no variable is set: `${A:-x}` and `${A-x}` become `x`, `${A}`
/// and `$A` become empty, `$$` is a literal `$`.
fn with_defaults(s: &str) -> String {
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
            if let Some((_, default)) = expr.split_once(":-").or_else(|| expr.split_once('-')) {
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
fn our_image(name: &str, service: &Value) -> Option<(String, Option<String>)> {
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

// ------------------------------------------------------------------------------------ clap

/// `env` name -> default values of every argument of a command line.
fn clap_env(cmd: &clap::Command) -> BTreeMap<String, Vec<String>> {
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
fn settings(target: &str, sub: Option<&str>) -> BTreeMap<String, Vec<String>> {
    let cmd = match target {
        "producer" => producer::ProducerArgs::command(),
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

// ------------------------------------------------------------------------------------ Dockerfile

#[derive(Debug, Default)]
struct Stage {
    name: String,
    from: String,
    /// (instruction in upper case, arguments)
    instructions: Vec<(String, String)>,
}

/// The stages of docker/Dockerfile; continuation lines joined, comments dropped.
fn dockerfile() -> Vec<Stage> {
    let text = read("docker/Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical.iter().filter(|l| !l.is_empty()) {
        let (op, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let op = op.to_ascii_uppercase();
        let args = args.trim().to_owned();
        if op == "FROM" {
            let words: Vec<&str> = args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let (from, name) = match words.as_slice() {
                [from] => (from.to_string(), String::new()),
                [from, kw, name] if kw.eq_ignore_ascii_case("as") => {
                    (from.to_string(), name.to_string())
                }
                _ => panic!("unexpected FROM line: {line}"),
            };
            stages.push(Stage {
                name,
                from,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push((op, args));
        }
    }
    stages
}

/// A stage and the stages it is based on, nearest first.
fn chain<'a>(stages: &'a [Stage], name: &str) -> Vec<&'a Stage> {
    let mut out = Vec::new();
    let mut next = Some(name.to_owned());
    while let Some(n) = next.take() {
        if let Some(stage) = stages.iter().find(|s| s.name == n) {
            assert!(out.len() < stages.len(), "FROM cycle at stage {n}");
            next = Some(stage.from.clone());
            out.push(stage);
        }
    }
    out
}

/// Binary names a stage copies out of `target/release/`.
fn copied_binaries(stage: &Stage) -> Vec<String> {
    stage
        .instructions
        .iter()
        .filter(|(op, _)| op == "COPY")
        .flat_map(|(_, args)| args.split_whitespace())
        .filter_map(|word| {
            word.split_once("target/release/")
                .map(|(_, bin)| bin.to_owned())
        })
        .collect()
}

/// Names set by the ENV instructions of a stage (`ENV A=1 B=2` and the legacy `ENV A 1`).
fn env_names(stage: &Stage) -> Vec<String> {
    stage
        .instructions
        .iter()
        .filter(|(op, _)| op == "ENV")
        .flat_map(|(_, args)| {
            if args
                .split_whitespace()
                .next()
                .is_some_and(|w| w.contains('='))
            {
                args.split_whitespace()
                    .filter_map(|w| w.split_once('=').map(|(k, _)| k.to_owned()))
                    .collect::<Vec<_>>()
            } else {
                args.split_whitespace()
                    .next()
                    .map(str::to_owned)
                    .into_iter()
                    .collect()
            }
        })
        .collect()
}

// ------------------------------------------------------------------------------------ tests

#[test]
fn compose_builds_dockerfile_targets_named_after_the_services() {
    let doc = compose();
    let stages = dockerfile();
    let stage_names: BTreeSet<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    let mut built = BTreeSet::new();
    for (name, svc) in names(services(&doc)) {
        let Some(build) = svc.get("build") else {
            continue;
        };
        let target = build.get("target").map(text).unwrap_or_default();
        assert!(
            stage_names.contains(target.as_str()),
            "service {name} builds target {target:?}, which is no `FROM ... AS` stage of \
             docker/Dockerfile ({stage_names:?})"
        );
        assert!(
            SERVICES.contains(&target.as_str()),
            "service {name} builds {target}"
        );
        assert_eq!(
            build.get("context").map(text).as_deref(),
            Some("."),
            "{name}: context"
        );
        assert_eq!(
            build.get("dockerfile").map(text).as_deref(),
            Some("docker/Dockerfile"),
            "{name}: dockerfile"
        );
        // The CI pushes $DOCKER_REGISTRY_URL/<target>:$IMAGE_TAG; the deploy pulls these names.
        let image = svc.get("image").map(text).unwrap_or_default();
        assert!(
            image.starts_with("${DOCKER_REGISTRY_URL:-")
                && image.ends_with(&format!("}}/{target}:${{IMAGE_TAG:-latest}}")),
            "service {name}: image {image:?} is not ${{DOCKER_REGISTRY_URL:-...}}/{target}:${{IMAGE_TAG:-latest}}"
        );
        built.insert(target);
    }
    let expected: BTreeSet<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    assert_eq!(built, expected, "compose builds every service image");
    for target in SERVICES {
        assert!(
            services(&doc).contains_key(target),
            "compose runs a service named {target}"
        );
    }
}

#[test]
fn dockerfile_ships_only_the_service_binaries() {
    let text = read("docker/Dockerfile");
    let stages = dockerfile();
    // Whatever the stage, only the services' binaries are copied out of the build.
    for stage in &stages {
        for bin in copied_binaries(stage) {
            assert_ne!(bin, DEV_ONLY, "{DEV_ONLY} must never be in an image");
            assert!(
                SERVICES.contains(&bin.as_str()),
                "stage {} copies target/release/{bin}, not a service binary",
                stage.name
            );
            let crate_dir = root().join("crates").join(&bin);
            assert!(
                crate_dir.join("src/main.rs").is_file(),
                "target/release/{bin} is no binary of the workspace (crates/{bin}/src/main.rs)"
            );
            let manifest = read(&format!("crates/{bin}/Cargo.toml"));
            assert!(
                manifest.contains(&format!("name = \"{bin}\"")),
                "crates/{bin} is package {bin}"
            );
        }
    }
    // The instructions (comments aside) never mention the development tooling.
    for stage in &stages {
        for (op, args) in &stage.instructions {
            assert!(!args.contains(DEV_ONLY), "{op} {args} mentions {DEV_ONLY}");
        }
    }
    // The build compiles exactly the three packages, release, with the lock file.
    let builds: Vec<&String> = stages
        .iter()
        .flat_map(|s| &s.instructions)
        .filter(|(op, args)| op == "RUN" && args.contains("cargo build"))
        .map(|(_, args)| args)
        .collect();
    assert!(!builds.is_empty(), "docker/Dockerfile runs cargo build");
    for args in builds {
        let words: Vec<&str> = args.split_whitespace().collect();
        let packages: BTreeSet<&str> = words
            .windows(2)
            .filter(|w| w[0] == "-p" || w[0] == "--package")
            .map(|w| w[1])
            .collect();
        assert_eq!(
            packages,
            BTreeSet::from(SERVICES),
            "cargo build packages: {args}"
        );
        assert!(
            words.contains(&"--release") && words.contains(&"--locked"),
            "{args}"
        );
    }
    // Each service image: its own binary only, on the slim base, non-root, with a healthcheck.
    for target in SERVICES {
        let chain = chain(&stages, target);
        assert!(!chain.is_empty(), "docker/Dockerfile has no stage {target}");
        let bins: Vec<String> = chain.iter().flat_map(|s| copied_binaries(s)).collect();
        assert_eq!(
            bins,
            vec![target.to_owned()],
            "binaries in the {target} image"
        );
        let base = &chain.last().expect("non-empty").from;
        assert_eq!(base, RUNTIME_BASE, "base image of {target}");
        let find = |op: &str| {
            chain
                .iter()
                .find_map(|s| s.instructions.iter().rev().find(|(o, _)| o == op))
                .map(|(_, args)| args.clone())
        };
        let user = find("USER").unwrap_or_else(|| panic!("{target}: no USER"));
        assert!(
            !(user.starts_with("root") || user == "0" || user.starts_with("0:")),
            "{target} runs as {user}"
        );
        assert_eq!(
            find("STOPSIGNAL").as_deref(),
            Some("SIGTERM"),
            "{target}: STOPSIGNAL"
        );
        let health = find("HEALTHCHECK").unwrap_or_else(|| panic!("{target}: no HEALTHCHECK"));
        assert!(health.contains("healthz"), "{target}: HEALTHCHECK {health}");
        let entrypoint = find("ENTRYPOINT").unwrap_or_default();
        assert!(
            entrypoint.contains(&format!("/{target}\"")),
            "{target}: ENTRYPOINT {entrypoint}"
        );
    }
    assert!(
        text.contains("FROM rust:1-bookworm"),
        "the builder is rust:1-bookworm"
    );
}

#[test]
fn services_get_only_variables_they_read() {
    let doc = compose();
    let stages = dockerfile();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (name, svc) in names(services(&doc)) {
        let Some((target, sub)) = our_image(&name, svc) else {
            continue;
        };
        let known = settings(&target, sub.as_deref());
        for (var, value) in environment(svc) {
            if !(known.contains_key(&var) || EXTRA_ENV.contains(&var.as_str())) {
                problems.push(format!(
                    "compose service {name} sets {var}, which `{target}{}` does not read",
                    sub.as_deref().map(|s| format!(" {s}")).unwrap_or_default()
                ));
            }
            if value
                .as_deref()
                .is_some_and(|v| with_defaults(v).is_empty())
            {
                problems.push(format!(
                    "compose service {name} sets {var} to an empty string by default: leave \
                     the value out (pass-through) so that it stays unset"
                ));
            }
        }
        checked += 1;
    }
    assert!(
        checked >= SERVICES.len(),
        "compose runs our images ({checked} services found)"
    );
    for target in SERVICES {
        let known = settings(target, None);
        for stage in chain(&stages, target) {
            for var in env_names(stage) {
                if !(known.contains_key(&var) || EXTRA_ENV.contains(&var.as_str())) {
                    problems.push(format!(
                        "docker/Dockerfile stage {} sets ENV {var}, which {target} does not read",
                        stage.name
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn compose_exposes_every_setting_of_the_services() {
    // Configuration is environment only: every setting a service reads is listed for it in
    // compose (most without a value, i.e. passed through from the shell or .env when set).
    let doc = compose();
    let mut missing = Vec::new();
    for (name, svc) in names(services(&doc)) {
        let Some((target, sub)) = our_image(&name, svc) else {
            continue;
        };
        let listed = environment(svc);
        for var in settings(&target, sub.as_deref()).into_keys() {
            if !listed.contains_key(&var) {
                missing.push(format!("{name}: {var}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "settings missing from docker-compose.yml (add them, without a value if the service's \
         default is right): {missing:?}"
    );
}

#[test]
fn kafka_init_creates_the_topics_the_services_use() {
    let doc = compose();
    let init = environment(service(&doc, "kafka-init"));
    let created: BTreeSet<String> = init
        .get("TOPICS")
        .cloned()
        .flatten()
        .expect("kafka-init has TOPICS")
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let all: BTreeSet<String> = log_schema::topics::ALL
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(created, all, "kafka-init topics vs log_schema::topics::ALL");
    assert!(init.contains_key("PARTITIONS") && init.contains_key("REPLICATION"));
    let command = service(&doc, "kafka-init")
        .get("command")
        .map(|c| format!("{c:?}"))
        .unwrap_or_default();
    assert!(
        command.contains("kafka-topics") && command.contains("$$TOPICS"),
        "{command}"
    );

    for target in SERVICES {
        let topic_vars: Vec<(String, Vec<String>)> = settings(target, None)
            .into_iter()
            .filter(|(var, _)| var.ends_with("_TOPIC"))
            .collect();
        assert!(!topic_vars.is_empty(), "{target} has *_TOPIC settings");
        for (var, defaults) in topic_vars {
            assert!(!defaults.is_empty(), "{target} {var} has a default");
            for topic in defaults {
                assert!(
                    created.contains(&topic),
                    "{target} {var} defaults to {topic}, not created"
                );
            }
        }
    }
    // Topics compose sets explicitly must exist too.
    for (name, svc) in names(services(&doc)) {
        if our_image(&name, svc).is_none() {
            continue;
        }
        for (var, value) in environment(svc) {
            if let (true, Some(value)) = (var.ends_with("_TOPIC"), value) {
                let topic = with_defaults(&value);
                assert!(
                    created.contains(&topic),
                    "{name} {var}={topic} is not created"
                );
            }
        }
    }
}

#[test]
fn services_reach_kafka_and_cassandra_through_the_compose_services() {
    let doc = compose();
    let kafka = environment(service(&doc, "kafka"));
    let get = |k: &str| {
        kafka
            .get(k)
            .cloned()
            .flatten()
            .unwrap_or_else(|| panic!("kafka sets {k}"))
    };
    let listeners = |s: String| -> BTreeMap<String, String> {
        s.split(',')
            .map(|l| {
                let (name, addr) = l.split_once("://").expect("NAME://host:port");
                (name.to_owned(), addr.to_owned())
            })
            .collect()
    };
    let advertised = listeners(get("KAFKA_ADVERTISED_LISTENERS"));
    let bound = listeners(get("KAFKA_LISTENERS"));
    let internal = &advertised[&get("KAFKA_INTER_BROKER_LISTENER_NAME")];
    let (host, _) = internal.split_once(':').expect("host:port");
    assert!(
        services(&doc).contains_key(host),
        "internal listener {internal} is a service"
    );
    // Host tools: an advertised localhost listener, published on the same port.
    let (external_name, external) = advertised
        .iter()
        .find(|(_, addr)| addr.starts_with("localhost:"))
        .expect("an advertised listener for host tools (localhost)");
    let host_port = external.trim_start_matches("localhost:");
    let container_port = bound[external_name].rsplit(':').next().expect("port");
    let ports: Vec<String> = service(&doc, "kafka")
        .get("ports")
        .and_then(Value::as_sequence)
        .expect("kafka publishes a port")
        .iter()
        .map(text)
        .collect();
    assert!(
        ports
            .iter()
            .any(|p| p.ends_with(&format!("{host_port}:{container_port}"))),
        "kafka publishes {host_port} -> {container_port} for host tools: {ports:?}"
    );

    let init = environment(service(&doc, "kafka-init"));
    let bootstrap = with_defaults(init["BOOTSTRAP"].as_deref().expect("kafka-init BOOTSTRAP"));
    assert_eq!(&bootstrap, internal, "kafka-init bootstrap");

    let mut cassandra_users = 0;
    for (name, svc) in names(services(&doc)) {
        let Some((target, sub)) = our_image(&name, svc) else {
            continue;
        };
        let env = environment(svc);
        let known = settings(&target, sub.as_deref());
        if known.contains_key("KAFKA_BROKER") {
            let broker = env
                .get("KAFKA_BROKER")
                .cloned()
                .flatten()
                .unwrap_or_else(|| panic!("{name} sets KAFKA_BROKER"));
            assert_eq!(&with_defaults(&broker), internal, "{name} KAFKA_BROKER");
        }
        if known.contains_key("CASSANDRA_NODES") {
            let nodes = env
                .get("CASSANDRA_NODES")
                .cloned()
                .flatten()
                .unwrap_or_else(|| panic!("{name} sets CASSANDRA_NODES"));
            for node in with_defaults(&nodes).split(',') {
                let (host, port) = node.split_once(':').expect("host:port");
                assert!(
                    services(&doc).contains_key(host),
                    "{name}: {host} is a service"
                );
                assert_eq!(port, "9042", "{name}: CQL port");
            }
            cassandra_users += 1;
        }
    }
    assert!(
        cassandra_users >= 2,
        "cassandra-writer and cassandra-migrate use Cassandra"
    );
}

#[test]
fn services_scale_and_are_hardened() {
    let doc = compose();
    let all = services(&doc);
    for (name, svc) in names(all) {
        let Some((_, sub)) = our_image(&name, svc) else {
            continue;
        };
        assert!(
            svc.get("container_name").is_none(),
            "{name} has a container_name"
        );
        assert!(svc.get("ports").is_none(), "{name} publishes ports");
        assert_eq!(
            svc.get("read_only"),
            Some(&Value::Bool(true)),
            "{name}: read_only"
        );
        let user = svc.get("user").map(text).unwrap_or_default();
        assert!(
            !user.is_empty() && !user.starts_with("root") && user != "0" && !user.starts_with("0:"),
            "{name} runs as {user:?}"
        );
        let restart = svc.get("restart").map(text).unwrap_or_default();
        if sub.is_some() {
            assert_eq!(restart, "no", "one-shot {name}");
        } else {
            assert!(
                restart == "unless-stopped" || restart.starts_with("on-failure"),
                "{name}: restart {restart:?}"
            );
        }
        if let Some(deps) = svc.get("depends_on").and_then(Value::as_mapping) {
            for (dep, how) in deps {
                let dep = text(dep);
                assert!(
                    all.contains_key(dep.as_str()),
                    "{name} depends on unknown {dep}"
                );
                let condition = how.get("condition").map(text).unwrap_or_default();
                assert!(
                    condition == "service_healthy" || condition == "service_completed_successfully",
                    "{name} -> {dep}: condition {condition:?}"
                );
            }
        } else {
            panic!("{name} has no depends_on conditions");
        }
    }
    // Every service that consumes or produces waits for the topics.
    for target in SERVICES {
        let deps = service(&doc, target).get("depends_on").expect("depends_on");
        assert!(
            deps.get("kafka-init").is_some(),
            "{target} waits for kafka-init"
        );
    }
    let writer_deps = service(&doc, "cassandra-writer")
        .get("depends_on")
        .expect("depends_on");
    assert!(
        writer_deps.get("cassandra-migrate").is_some(),
        "writer waits for migrations"
    );
    // Opt-in profiles are present.
    let mut profiles = BTreeSet::new();
    for (_, svc) in names(all) {
        for p in svc
            .get("profiles")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            profiles.insert(text(p));
        }
    }
    assert!(
        profiles.contains("tools") && profiles.contains("monitoring"),
        "{profiles:?}"
    );
}

// ------------------------------------------------------------------------------------ .dockerignore

/// `*`, `?` within one path segment; `**` any number of segments.
fn glob(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.split_first(), path.split_first()) {
        (None, None) => true,
        (Some((&"**", rest)), _) => {
            glob(rest, path)
                || path
                    .split_first()
                    .is_some_and(|(_, tail)| glob(pattern, tail))
        }
        (Some((p, prest)), Some((s, srest))) => {
            segment(p.as_bytes(), s.as_bytes()) && glob(prest, srest)
        }
        _ => false,
    }
}

fn segment(p: &[u8], s: &[u8]) -> bool {
    match (p.split_first(), s.split_first()) {
        (None, None) => true,
        (Some((b'*', prest)), _) => {
            segment(prest, s) || s.split_first().is_some_and(|(_, tail)| segment(p, tail))
        }
        (Some((b'?', prest)), Some((_, srest))) => segment(prest, srest),
        (Some((pc, prest)), Some((sc, srest))) => pc == sc && segment(prest, srest),
        _ => false,
    }
}

/// Whether .dockerignore keeps `path` (relative, `/`-separated) out of the build context:
/// the last pattern matching the path or one of its parent directories decides.
fn ignored(rules: &[(bool, Vec<String>)], path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let mut out = false;
    for (negated, pattern) in rules {
        let pattern: Vec<&str> = pattern.iter().map(String::as_str).collect();
        if (1..=parts.len()).any(|n| glob(&pattern, &parts[..n])) {
            out = !negated;
        }
    }
    out
}

fn dockerignore() -> Vec<(bool, Vec<String>)> {
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (negated, l) = l.strip_prefix('!').map_or((false, l), |rest| (true, rest));
            let parts = l
                .trim_matches('/')
                .split('/')
                .filter(|p| !p.is_empty() && *p != ".")
                .map(str::to_owned)
                .collect();
            (negated, parts)
        })
        .collect()
}

fn source_files(dir: &Path, rel: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let path = entry.path();
        if path.is_dir() {
            source_files(&path, &rel, out);
        } else if ["rs", "toml", "cql", "lock"]
            .iter()
            .any(|ext| name.ends_with(&format!(".{ext}")))
        {
            out.push(rel);
        }
    }
}

#[test]
fn dockerignore_keeps_sources_in_and_local_state_out() {
    let rules = dockerignore();
    let mut needed = vec![
        "Cargo.toml".to_owned(),
        "Cargo.lock".to_owned(),
        "rustfmt.toml".to_owned(),
        "docker/healthcheck.sh".to_owned(),
    ];
    for dir in [".cargo", "crates", "migrations", "tests", "xtask"] {
        source_files(&root().join(dir), dir, &mut needed);
    }
    assert!(
        needed
            .iter()
            .any(|p| p.starts_with("migrations/") && p.ends_with(".cql"))
    );
    let dropped: Vec<&String> = needed.iter().filter(|p| ignored(&rules, p)).collect();
    assert!(
        dropped.is_empty(),
        ".dockerignore drops build inputs: {dropped:?}"
    );
    for local in [
        ".git/HEAD",
        "target/debug/producer",
        "target/venv-ci/bin/python",
        "target/local-stack/dev/kafka.log",
        "target/servers/kafka-0123456789ab.classpath",
        ".env",
        "deploy.env",
    ] {
        assert!(
            ignored(&rules, local),
            ".dockerignore lets {local} into the build context"
        );
    }
}

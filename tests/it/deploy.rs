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

/// `NAME` when `s` is exactly `${NAME:?message}` (or `${NAME?message}`): a value compose
/// refuses to run without.
fn required(s: &str) -> Option<&str> {
    let expr = s.strip_prefix("${")?.strip_suffix('}')?;
    let end = expr.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    let (name, op) = expr.split_at(end);
    (op.starts_with(":?") || op.starts_with('?')).then_some(name)
}

/// The value compose gives when no variable is set: `${A:-x}` and `${A-x}` become `x`, `${A}`,
/// `$A`, `${A:+x}` become empty (as does `${A:?message}`, which compose refuses instead: see
/// [`required`]), `$$` is a literal `$`.
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

/// A compose file other than docker-compose.yml (merge keys resolved).
fn compose_file(rel: &str) -> Value {
    let mut doc: Value =
        serde_yaml_ng::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is YAML: {e}"));
    doc.apply_merge()
        .unwrap_or_else(|e| panic!("{rel} merge keys (<<) resolve: {e}"));
    doc
}

/// A service's `profiles`.
fn profiles(service: &Value) -> BTreeSet<String> {
    service
        .get("profiles")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .map(text)
        .collect()
}

/// Every variable that a string of the file requires (`${NAME:?message}`).
fn required_vars(v: &Value, out: &mut BTreeSet<String>) {
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
fn env_file(rel: &str) -> BTreeMap<String, String> {
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
fn rust_from(dockerfile: &str) -> Option<String> {
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

// ------------------------------------------------------------------------------------ Dockerfile

#[derive(Debug, Default)]
struct Stage {
    name: String,
    from: String,
    /// (instruction in upper case, arguments)
    instructions: Vec<(String, String)>,
}

/// The stages of docker/Dockerfile (parsed by `parse-dockerfile`).
fn dockerfile() -> Vec<Stage> {
    let text = read("docker/Dockerfile");
    let parsed = parse_dockerfile::parse(&text).expect("docker/Dockerfile parses");
    parsed
        .stages()
        .map(|stage| Stage {
            name: stage
                .from
                .as_
                .as_ref()
                .map(|(_, name)| name.value.to_string())
                .unwrap_or_default(),
            from: stage.from.image.value.to_string(),
            instructions: stage.instructions.iter().map(instruction).collect(),
        })
        .collect()
}

/// An instruction's keyword and what the checks read of it: the command of RUN, ENTRYPOINT
/// and HEALTHCHECK (the exec form as a JSON array), the sources and destination of COPY, the
/// argument of ENV, USER and STOPSIGNAL, the whole instruction as JSON for the others.
fn instruction(i: &parse_dockerfile::Instruction<'_>) -> (String, String) {
    use parse_dockerfile::{HealthcheckArguments, Instruction, Source};
    let json = serde_json::to_value(i).expect("an instruction serializes");
    let kind = json["kind"].as_str().expect("kind").to_owned();
    let args = match i {
        Instruction::Run(run) => command(&run.arguments),
        Instruction::Entrypoint(entrypoint) => command(&entrypoint.arguments),
        Instruction::Healthcheck(healthcheck) => match &healthcheck.arguments {
            HealthcheckArguments::Cmd { arguments, .. } => command(arguments),
            _ => "NONE".to_owned(),
        },
        Instruction::Copy(copy) => copy
            .src
            .iter()
            .filter_map(|s| match s {
                Source::Path(p) => Some(p.value.to_string()),
                _ => None,
            })
            .chain([copy.dest.value.to_string()])
            .collect::<Vec<_>>()
            .join(" "),
        Instruction::Env(env) => env.arguments.value.to_string(),
        Instruction::User(user) => user.arguments.value.to_string(),
        Instruction::Stopsignal(signal) => signal.arguments.value.to_string(),
        _ => json.to_string(),
    };
    (kind, args)
}

fn command(c: &parse_dockerfile::Command<'_>) -> String {
    match c {
        parse_dockerfile::Command::Exec(args) => serde_json::to_string(
            &args
                .value
                .iter()
                .map(|a| a.value.as_ref())
                .collect::<Vec<&str>>(),
        )
        .expect("strings serialize"),
        parse_dockerfile::Command::Shell(line) => line.value.to_owned(),
        other => panic!("unknown command form: {other:?}"),
    }
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
}

#[test]
fn the_builder_pins_the_toolchain_the_ci_tests_with() {
    // rust:1.N-bookworm, never the floating rust:1-bookworm: the images are built with the
    // toolchain that the CI's fmt, clippy and test jobs used.
    let builder = rust_from(&read("docker/Dockerfile")).expect("docker/Dockerfile: FROM rust:");
    let version = builder
        .strip_prefix("rust:")
        .and_then(|t| t.strip_suffix("-bookworm"))
        .unwrap_or_else(|| panic!("the builder {builder} is not rust:<version>-bookworm"));
    let parts: Vec<&str> = version.split('.').collect();
    assert!(
        parts.len() >= 2
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())),
        "the builder {builder} does not pin a Rust release (rust:1.N-bookworm)"
    );
    let ci: Value =
        serde_yaml_ng::from_str(&read(".gitlab-ci.yml")).expect(".gitlab-ci.yml is YAML");
    let rust_jobs = ci
        .get(".rust")
        .and_then(|j| j.get("image"))
        .map(text)
        .expect(".gitlab-ci.yml: .rust has an image");
    assert_eq!(rust_jobs, builder, ".gitlab-ci.yml .rust image");
    let test_image = rust_from(&read("docker/ci.Dockerfile")).expect("docker/ci.Dockerfile: FROM");
    assert_eq!(
        test_image, builder,
        "docker/ci.Dockerfile (the test job's image)"
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
            // `${NAME:?message}` is no empty default: compose refuses to run without a value.
            if value
                .as_deref()
                .is_some_and(|v| required(v).is_none() && with_defaults(v).is_empty())
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

    // Production (no profile) talks to existing clusters: no default address, compose refuses to
    // run without one.
    let init = environment(service(&doc, "kafka-init"));
    let bootstrap = init["BOOTSTRAP"].clone().expect("kafka-init BOOTSTRAP");
    assert_eq!(
        required(&bootstrap),
        Some("KAFKA_BROKER"),
        "kafka-init BOOTSTRAP"
    );
    let mut cassandra_users = 0;
    for (name, svc) in names(services(&doc)) {
        let Some((target, sub)) = our_image(&name, svc) else {
            continue;
        };
        let env = environment(svc);
        let known = settings(&target, sub.as_deref());
        for var in ["KAFKA_BROKER", "CASSANDRA_NODES", "CASSANDRA_LOCAL_DC"] {
            if !known.contains_key(var) {
                continue;
            }
            let value = env
                .get(var)
                .cloned()
                .flatten()
                .unwrap_or_else(|| panic!("{name} sets {var}"));
            assert_eq!(
                required(&value),
                Some(var),
                "{name} {var}={value}: must be ${{{var}:?...}}, without a default"
            );
        }
        if known.contains_key("CASSANDRA_NODES") {
            cassandra_users += 1;
        }
    }
    assert!(
        cassandra_users >= 2,
        "cassandra-writer and cassandra-migrate use Cassandra"
    );

    // The local setup: docker/local.env points them at the `local` profile's services.
    let local = env_file("docker/local.env");
    let mut needed = BTreeSet::new();
    required_vars(&doc, &mut needed);
    for var in &needed {
        assert!(local.contains_key(var), "docker/local.env sets {var}");
    }
    assert_eq!(
        &local["KAFKA_BROKER"], internal,
        "docker/local.env KAFKA_BROKER"
    );
    for node in local["CASSANDRA_NODES"].split(',') {
        let (host, port) = node.split_once(':').expect("host:port");
        assert!(
            profiles(service(&doc, host)).contains("local"),
            "docker/local.env: {host} is a service of the local profile"
        );
        assert_eq!(port, "9042", "docker/local.env: CQL port");
    }
    let cassandra = environment(service(&doc, "cassandra"));
    assert_eq!(
        Some(&local["CASSANDRA_LOCAL_DC"]),
        cassandra["CASSANDRA_DC"].as_ref(),
        "docker/local.env CASSANDRA_LOCAL_DC is the cassandra service's datacenter"
    );
}

#[test]
fn the_cluster_example_replicates_three_times() {
    let mut needed = BTreeSet::new();
    required_vars(&compose(), &mut needed);
    let cluster = compose_file("docker/compose.cluster.yml");
    let nodes = services(&cluster);
    let env = env_file("docker/cluster.env");
    for var in &needed {
        assert!(env.contains_key(var), "docker/cluster.env sets {var}");
    }
    let node = |host: &str| {
        environment(
            nodes
                .get(host)
                .unwrap_or_else(|| panic!("docker/compose.cluster.yml has no service {host}")),
        )
    };
    let get = |env: &BTreeMap<String, Option<String>>, k: &str| {
        env.get(k)
            .cloned()
            .flatten()
            .unwrap_or_else(|| panic!("{k} is set"))
    };

    // Kafka: three brokers of one KRaft quorum, each advertised at its bootstrap address.
    let brokers: Vec<&str> = env["KAFKA_BROKER"].split(',').collect();
    assert_eq!(brokers.len(), 3, "KAFKA_BROKER lists three brokers");
    let mut quorums = BTreeSet::new();
    for addr in &brokers {
        let (host, _) = addr.split_once(':').expect("host:port");
        let broker = node(host);
        assert!(
            get(&broker, "KAFKA_ADVERTISED_LISTENERS")
                .split(',')
                .any(|l| l.ends_with(&format!("://{addr}"))),
            "{host} advertises {addr}"
        );
        assert_eq!(get(&broker, "KAFKA_MIN_INSYNC_REPLICAS"), "2", "{host}");
        assert_eq!(
            get(&broker, "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"),
            "3",
            "{host}: the consumer offsets are replicated 3 times"
        );
        quorums.insert(get(&broker, "KAFKA_CONTROLLER_QUORUM_VOTERS"));
    }
    assert_eq!(quorums.len(), 1, "one KRaft quorum: {quorums:?}");
    let quorum = quorums.first().expect("a quorum");
    assert_eq!(quorum.split(',').count(), 3, "three voters: {quorum}");
    assert_eq!(env["KAFKA_TOPIC_REPLICATION"], "3", "the topics: RF 3");

    // Cassandra: three nodes of the services' local datacenter, keyspace RF 3 there.
    let dc = &env["CASSANDRA_LOCAL_DC"];
    let cql: Vec<&str> = env["CASSANDRA_NODES"].split(',').collect();
    assert_eq!(cql.len(), 3, "CASSANDRA_NODES lists three nodes");
    for addr in cql {
        let (host, port) = addr.split_once(':').expect("host:port");
        assert_eq!(port, "9042", "{addr}: CQL port");
        assert_eq!(&get(&node(host), "CASSANDRA_DC"), dc, "{host}: datacenter");
    }
    let replication = &env["CASSANDRA_REPLICATION"];
    assert!(
        replication.contains("'NetworkTopologyStrategy'")
            && replication.contains(&format!("'{dc}': 3")),
        "CASSANDRA_REPLICATION {replication}: NetworkTopologyStrategy, 3 replicas in {dc}"
    );
    assert!(
        !env.contains_key("CASSANDRA_CONSISTENCY"),
        "the services keep their default consistency, LOCAL_QUORUM"
    );

    // The one-shots run in the example, after every node of theirs is healthy.
    for (job, prefix) in [
        ("kafka-init", "kafka-"),
        ("cassandra-migrate", "cassandra-"),
    ] {
        let svc = nodes
            .get(job)
            .unwrap_or_else(|| panic!("docker/compose.cluster.yml configures {job}"));
        assert!(
            profiles(svc).contains("cluster"),
            "{job} runs with --profile cluster"
        );
        let deps: BTreeSet<String> = svc
            .get("depends_on")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .map(|(k, _)| text(k))
            .collect();
        let all: BTreeSet<String> = names(nodes)
            .map(|(n, _)| n)
            .filter(|n| n.starts_with(prefix) && n[prefix.len()..].parse::<u32>().is_ok())
            .collect();
        assert_eq!(all.len(), 3, "three {prefix}N services");
        assert_eq!(deps, all, "{job} waits for");
    }
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
    // Profiles: the consumers in every setup (production is no profile), the synthetic
    // producer only in `demo`, the infrastructure and the one-shots in `local`, tools and
    // monitoring opt-in.
    for (name, expected) in [
        ("stream-reader", vec![]),
        ("cassandra-writer", vec![]),
        ("producer", vec!["demo"]),
        ("kafka", vec!["local"]),
        ("cassandra", vec!["local"]),
        ("kafka-init", vec!["local"]),
        ("cassandra-migrate", vec!["local"]),
        ("kafka-ui", vec!["tools"]),
        ("cqlsh", vec!["tools"]),
        ("prometheus", vec!["monitoring"]),
        ("grafana", vec!["monitoring"]),
    ] {
        let expected: BTreeSet<String> = expected.into_iter().map(str::to_owned).collect();
        assert_eq!(
            profiles(service(&doc, name)),
            expected,
            "profiles of {name}"
        );
    }
    // A dependency that some setup of the dependent leaves out is `required: false`: the
    // production setup has no kafka-init, cassandra-migrate, kafka or cassandra.
    for (name, svc) in names(all) {
        let Some(deps) = svc.get("depends_on").and_then(Value::as_mapping) else {
            continue;
        };
        let mine = profiles(svc);
        for (dep, how) in deps {
            let dep = text(dep);
            let theirs = profiles(service(&doc, &dep));
            let always_there = theirs.is_empty() || (!mine.is_empty() && mine.is_subset(&theirs));
            if !always_there {
                assert_eq!(
                    how.get("required"),
                    Some(&Value::Bool(false)),
                    "{name} (profiles {mine:?}) -> {dep} (profiles {theirs:?}): required: false"
                );
            }
        }
    }
    // Credentials and certificates: the secrets directory at /run/secrets in our containers.
    for (name, svc) in names(all) {
        if our_image(&name, svc).is_none() {
            continue;
        }
        let secrets: Vec<&Value> = svc
            .get("secrets")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .collect();
        assert!(
            secrets
                .iter()
                .any(|s| s.get("target").map(text).as_deref() == Some("/run/secrets")),
            "{name} mounts the secrets at /run/secrets"
        );
    }
}

#[test]
fn the_deploy_ships_what_compose_mounts() {
    let doc = compose();
    let deploy = read("docker/deploy.sh");
    let mut prometheus_mounts = BTreeMap::new();
    for (name, svc) in names(services(&doc)) {
        for volume in svc
            .get("volumes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let volume = text(volume);
            let Some(bind) = volume.strip_prefix("./") else {
                continue;
            };
            let mut parts = bind.split(':');
            let source = parts.next().expect("source").to_owned();
            let target = parts.next().expect("target").to_owned();
            assert!(
                root().join(&source).exists(),
                "{name} mounts ./{source}, which does not exist"
            );
            // deploy.sh names the file, or a directory that holds it.
            let parts: Vec<&str> = source.split('/').collect();
            let shipped = (2..=parts.len()).any(|n| deploy.contains(&parts[..n].join("/")));
            assert!(
                shipped,
                "{name} mounts ./{source}, which docker/deploy.sh does not ship"
            );
            if name == "prometheus" {
                prometheus_mounts.insert(source, target);
            }
        }
    }
    // Prometheus resolves rule_files relative to its configuration file: the same relative path
    // must work in the container and for `promtool check config docker/prometheus.yml`.
    let config_target = Path::new(
        prometheus_mounts
            .get("docker/prometheus.yml")
            .expect("compose mounts docker/prometheus.yml into prometheus"),
    )
    .parent()
    .expect("a directory")
    .to_owned();
    let config: Value =
        serde_yaml_ng::from_str(&read("docker/prometheus.yml")).expect("prometheus.yml is YAML");
    let rules: Vec<String> = config
        .get("rule_files")
        .and_then(Value::as_sequence)
        .expect("docker/prometheus.yml has rule_files")
        .iter()
        .map(text)
        .collect();
    assert!(!rules.is_empty(), "rule_files");
    for rule in rules {
        assert!(
            !rule.starts_with('/'),
            "rule file {rule}: relative to the configuration, or promtool cannot find it here"
        );
        let here = format!("docker/{rule}");
        assert!(root().join(&here).is_file(), "{here} exists");
        let there = config_target.join(&rule);
        assert_eq!(
            prometheus_mounts.get(&here).map(PathBuf::from),
            Some(there.clone()),
            "compose mounts {here} at {}",
            there.display()
        );
    }
}

// ------------------------------------------------------------------------------------ .dockerignore

/// Whether .dockerignore keeps `path` (relative, `/`-separated) out of the build context:
/// the last pattern matching the path or one of its parent directories decides.
fn ignored(rules: &[(bool, globset::GlobMatcher)], path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let mut out = false;
    for (negated, pattern) in rules {
        if (1..=parts.len()).any(|n| pattern.is_match(parts[..n].join("/"))) {
            out = !negated;
        }
    }
    out
}

/// The rules of .dockerignore: `!` negates; patterns are relative to the context root, `*`
/// and `?` stay within one path segment, `**` spans any number of them (Docker's rules,
/// matched with `globset`).
fn dockerignore() -> Vec<(bool, globset::GlobMatcher)> {
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (negated, l) = l.strip_prefix('!').map_or((false, l), |rest| (true, rest));
            let pattern = l.trim_start_matches("./").trim_matches('/');
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .unwrap_or_else(|e| panic!(".dockerignore pattern {l}: {e}"))
                .compile_matcher();
            (negated, glob)
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

//! The images: what the Dockerfile builds and ships, and what `.dockerignore` keeps out of
//! the build context.

use super::*;

// ------------------------------------------------------------------------------------ Dockerfile

#[derive(Debug, Default)]
pub(super) struct Stage {
    pub(super) name: String,
    pub(super) from: String,
    /// (instruction in upper case, arguments)
    pub(super) instructions: Vec<(String, String)>,
}

/// The stages of docker/Dockerfile (parsed by `parse-dockerfile`).
pub(super) fn dockerfile() -> Vec<Stage> {
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
pub(super) fn instruction(i: &parse_dockerfile::Instruction<'_>) -> (String, String) {
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

pub(super) fn command(c: &parse_dockerfile::Command<'_>) -> String {
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
pub(super) fn chain<'a>(stages: &'a [Stage], name: &str) -> Vec<&'a Stage> {
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
pub(super) fn copied_binaries(stage: &Stage) -> Vec<String> {
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
pub(super) fn env_names(stage: &Stage) -> Vec<String> {
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

// ------------------------------------------------------------------------------------ .dockerignore

/// Whether .dockerignore keeps `path` (relative, `/`-separated) out of the build context:
/// the last pattern matching the path or one of its parent directories decides.
pub(super) fn ignored(rules: &[(bool, globset::GlobMatcher)], path: &str) -> bool {
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
pub(super) fn dockerignore() -> Vec<(bool, globset::GlobMatcher)> {
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

pub(super) fn source_files(dir: &Path, rel: &str, out: &mut Vec<String>) {
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
pub(super) fn dockerignore_keeps_sources_in_and_local_state_out() {
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

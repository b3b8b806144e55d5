//! docker-compose.yml: services, settings, topics and addresses.

use super::image::{chain, dockerfile, env_names};
use super::*;

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

//! The production paths: the cluster example, scaling and hardening, and what the deploy
//! ships.

use super::*;

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

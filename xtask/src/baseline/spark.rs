//! The seed's Spark job: pyspark and the connectors resolved once, `spark-submit` of
//! `xtask/baseline/seed_pipeline.py` against the bench stack.

use super::*;

/// A Spark installation: pyspark's `spark-submit` and the connector jars it lacks.
pub(super) struct Spark {
    submit: PathBuf,
    home: PathBuf,
    python: PathBuf,
    jars: String,
}

impl Spark {
    pub(super) fn install() -> anyhow::Result<Self> {
        let submit = crate::python_tool(&format!("pyspark=={SPARK_VERSION}"), "spark-submit")?;
        let python = submit.with_file_name("python");
        let out = Command::new(&python)
            .args([
                "-c",
                "import os, pyspark; print(os.path.dirname(pyspark.__file__))",
            ])
            .output()
            .context("find pyspark's home")?;
        let home = PathBuf::from(String::from_utf8(out.stdout)?.trim());
        let shipped: BTreeSet<String> = fs::read_dir(home.join("jars"))
            .with_context(|| format!("list {}/jars", home.display()))?
            .filter_map(|e| artifact(&e.ok()?.file_name().to_string_lossy()))
            .collect();
        let pom = crate::project_root().join("xtask/baseline/pom.xml");
        let classpath = crate::servers::resolve("spark-connectors", &pom)?;
        // Like `spark-submit --packages`, which leaves Spark's own modules out: every artifact
        // pyspark already ships keeps pyspark's version.
        let jars: Vec<String> = classpath
            .jars
            .iter()
            .filter(|j| {
                j.file_name()
                    .and_then(|n| artifact(&n.to_string_lossy()))
                    .is_none_or(|a| !shipped.contains(&a))
            })
            .map(|j| j.display().to_string())
            .collect();
        Ok(Self {
            submit,
            home,
            python,
            jars: jars.join(","),
        })
    }

    /// Starts the job on `topic` into `keyspace` and waits until its query runs.
    pub(super) async fn start(
        &self,
        stack: &Stack,
        topic: &str,
        keyspace: &str,
        log: &Path,
    ) -> anyhow::Result<Job> {
        let checkpoint = crate::target_dir()
            .join("bench/spark-checkpoint")
            .join(topic);
        let _ = fs::remove_dir_all(&checkpoint);
        let (cql_host, cql_port) = stack
            .cql_addr()
            .rsplit_once(':')
            .map(|(h, p)| (h.to_owned(), p.to_owned()))
            .context("CQL address")?;
        let mut env: Vec<(String, String)> = [
            ("SPARK_HOME", self.home.display().to_string()),
            ("PYSPARK_PYTHON", self.python.display().to_string()),
            ("PYSPARK_DRIVER_PYTHON", self.python.display().to_string()),
            ("SPARK_KAFKA_BROKER", stack.kafka_addr()),
            ("SPARK_INPUT_TOPIC", topic.to_owned()),
            ("SPARK_CASSANDRA_HOST", cql_host),
            ("SPARK_CASSANDRA_PORT", cql_port),
            ("SPARK_KEYSPACE", keyspace.to_owned()),
            ("SPARK_CHECKPOINT_DIR", checkpoint.display().to_string()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into();
        let java = crate::servers::java()?;
        if let Some(home) = java.parent().and_then(Path::parent) {
            env.push(("JAVA_HOME".to_owned(), home.display().to_string()));
        }
        let _ = fs::remove_file(log);
        let script = crate::project_root().join("xtask/baseline/seed_pipeline.py");
        let mut child = crate::spawn_logged(
            &self.submit,
            &[
                "--master",
                "local[2]",
                "--jars",
                &self.jars,
                &script.display().to_string(),
            ],
            &env,
            log,
        )?;
        let deadline = Instant::now() + Duration::from_secs(180);
        while !fs::read_to_string(log)
            .unwrap_or_default()
            .contains("query started")
        {
            if let Some(status) = child.try_wait()? {
                bail!("the Spark job exited ({status}); see {}", log.display());
            }
            if Instant::now() > deadline {
                stop(&mut child);
                bail!(
                    "the Spark job did not start within 180 s; see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Job { child, checkpoint })
    }
}

/// `name-1.2.3.jar` → `name`.
pub(super) fn artifact(file: &str) -> Option<String> {
    let stem = file.strip_suffix(".jar")?;
    let cut = stem
        .match_indices('-')
        .find(|(i, _)| stem[i + 1..].starts_with(|c: char| c.is_ascii_digit()))?
        .0;
    Some(stem[..cut].to_owned())
}

/// A running Spark job.
pub(super) struct Job {
    pub(super) child: Child,
    checkpoint: PathBuf,
}

impl Job {
    /// The JVM (spark-submit execs it) and its Python driver.
    pub(super) fn pids(&self) -> Vec<i32> {
        let jvm = self.child.id() as i32;
        let mut pids = vec![jvm];
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let parent = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()
                });
            if parent == Some(jvm) {
                pids.push(pid);
            }
        }
        pids
    }

    pub(super) fn cpu_secs(&self) -> f64 {
        self.pids().into_iter().map(process_cpu_secs).sum()
    }

    pub(super) fn peak_rss_mb(&self) -> f64 {
        self.pids()
            .into_iter()
            .map(|p| bench::peak_rss_mb(p as u32))
            .sum()
    }

    /// Input offsets of the last committed micro-batch (its checkpoint), summed.
    pub(super) fn committed(&self) -> i64 {
        let last = fs::read_dir(self.checkpoint.join("commits"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u64>().ok())
            .max();
        let Some(batch) = last else { return 0 };
        let text = fs::read_to_string(self.checkpoint.join(format!("offsets/{batch}")))
            .unwrap_or_default();
        // Last line: {"<topic>":{"<partition>":<next offset>,...}}
        serde_json::from_str::<serde_json::Value>(text.lines().last().unwrap_or("{}"))
            .ok()
            .and_then(|v| {
                let topics = v.as_object()?.values().next()?.as_object()?.clone();
                Some(topics.values().filter_map(serde_json::Value::as_i64).sum())
            })
            .unwrap_or(0)
    }

    /// Waits until the job committed a micro-batch up to `n` input offsets.
    pub(super) async fn wait_committed(&mut self, n: i64, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let done = self.committed();
            if done >= n {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the Spark job exited ({status}) after {done} of {n} records");
            }
            if start.elapsed() > limit {
                bail!("the Spark job committed {done} of {n} records in {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

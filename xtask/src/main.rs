//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! * `services start|stop|status`: the local stack (Apache Kafka + Apache Cassandra JVMs);
//! * `test`: its own stack on other ports, every unit and integration test, teardown;
//! * `up`: the stack plus producer → stream-reader → cassandra-writer, with a status line;
//! * `drill`, `bench`, `soak`, `fuzz`: fault drills, benchmarks, memory over time, fuzzing.

mod baseline;
mod bench;
mod doc_commands;
mod docs;
mod drill;
mod fuzz;
mod procs;
mod secure;
mod servers;
mod soak;
mod stack;
mod topics;
mod tuning;
mod up;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use pipeline_runtime::transaction::Delivery;

use crate::stack::Stack;

#[derive(Debug, Parser)]
#[command(about = "Project automation for the IP-log pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Manage the local stack (Kafka on 127.0.0.1:9092, Cassandra's CQL on 127.0.0.1:9042).
    Services {
        #[command(subcommand)]
        action: ServicesCmd,
    },
    /// Run every unit and integration test against a fresh stack of its own.
    Test {
        /// Only the secured-cluster part: the `secured::` tests and its quick drills.
        #[arg(long)]
        secured_only: bool,
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Start the stack and the whole pipeline; Ctrl-C stops everything.
    Up(up::UpArgs),
    /// cargo-fuzz runs of the log-schema and log-formats targets (installs cargo-fuzz if
    /// missing).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (validate, dlq_roundtrip or formats).
        #[arg(long)]
        target: Option<String>,
    },
    /// Throughput, latency and memory of every stage against its ceiling (not part of CI).
    Bench(bench::BenchArgs),
    /// Generate docs/configuration.md from the services' settings (`--check`: fail if the
    /// committed one is stale).
    Docs {
        /// Compare instead of writing.
        #[arg(long)]
        check: bool,
    },
    /// Crash, outage and rebalance drills on a stack of their own, with exact reconciliation.
    Drill(drill::DrillArgs),
    /// The three services at a steady rate for minutes on a stack of their own, nobody
    /// scraping: RSS over time, and whether it stayed flat.
    Soak(soak::SoakArgs),
    /// cqlsh (from PyPI, in a venv under target/) against the local Cassandra (on a secured
    /// stack over TLS as the read-only `analyst` role).
    Cqlsh {
        #[command(flatten)]
        shape: stack::Shape,
        /// Arguments for cqlsh, e.g. -e "SELECT * FROM ip_logs.access_logs LIMIT 10;".
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ServicesCmd {
    /// Start Kafka and Cassandra, create the topics, apply the migrations.
    Start {
        /// Begin from empty state (deletes Kafka's and Cassandra's data).
        #[arg(long)]
        clean: bool,
        /// Partitions per topic.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        #[command(flatten)]
        shape: stack::Shape,
    },
    /// Resolve Kafka's and Cassandra's runtime classpaths from Maven Central (once per
    /// machine; `start` does it too) and check for Java 17.
    Resolve,
    /// Stop exactly the processes `start` began.
    Stop {
        #[command(flatten)]
        shape: stack::Shape,
    },
    /// Show what runs where.
    Status {
        #[command(flatten)]
        shape: stack::Shape,
    },
    /// Print the environment of one identity on the stack (`export` lines): `producer`,
    /// `stream-reader`, `cassandra-writer`, `migrate`, `operator` or `analyst`.
    Env {
        /// Whose credentials (on a secured stack).
        #[arg(default_value = "analyst")]
        who: String,
        #[command(flatten)]
        shape: stack::Shape,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xtask: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Services { action } => match action {
            ServicesCmd::Start {
                clean,
                partitions,
                shape,
            } => {
                let stack = Stack::dev(partitions).shaped(shape);
                stack.start(clean).await?;
                println!(
                    "local stack is up: KAFKA_BROKER={} CASSANDRA_NODES={}",
                    stack.kafka_addr(),
                    stack.cql_addr()
                );
                if shape.secure {
                    println!(
                        "credentials: eval \"$(cargo xtask services env <who>{})\"",
                        if shape.cluster {
                            " --cluster --secure"
                        } else {
                            " --secure"
                        }
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            ServicesCmd::Resolve => {
                let java = servers::java()?;
                for server in servers::Server::ALL {
                    let cp = servers::classpath(server)?;
                    println!(
                        "{:<9} {} ({} jars)",
                        server.name(),
                        cp.version(server),
                        cp.jars.len()
                    );
                }
                println!("java      {}", java.display());
                Ok(ExitCode::SUCCESS)
            }
            ServicesCmd::Stop { shape } => {
                Stack::dev(3).shaped(shape).stop()?;
                Ok(ExitCode::SUCCESS)
            }
            ServicesCmd::Env { who, shape } => {
                let stack = Stack::dev(3).shaped(shape);
                for (k, v) in stack.env_of(&who, &[]) {
                    println!("export {k}=\"{v}\"");
                }
                Ok(ExitCode::SUCCESS)
            }
            ServicesCmd::Status { shape } => {
                let up = Stack::dev(3).shaped(shape).status().await;
                Ok(if up {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(3)
                })
            }
        },
        Cmd::Test {
            secured_only,
            cargo_args,
        } => test(secured_only, cargo_args).await,
        Cmd::Up(args) => up::up(args).await,
        Cmd::Fuzz { seconds, target } => fuzz::fuzz(seconds, target),
        Cmd::Docs { check } => docs::docs(check).map(|()| ExitCode::SUCCESS),
        Cmd::Bench(args) => {
            bench::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Drill(args) => {
            cargo(&["build", "--quiet", "--bins"], false)?;
            let stack = Stack::named("drill", 29092, 29042, 3).shaped(args.shape);
            stack.start(true).await?;
            let result = drill::run(&stack, &args).await;
            let stopped = stack.stop();
            let outcomes = result?;
            stopped?;
            Ok(if outcomes.iter().all(drill::Outcome::ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Soak(args) => soak::run(args).await,
        Cmd::Cqlsh { shape, args } => {
            let stack = Stack::dev(3).shaped(shape);
            let status = cqlsh_command(&stack)?.args(&args).status()?;
            Ok(if status.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

async fn test(secured_only: bool, cargo_args: Vec<String>) -> anyhow::Result<ExitCode> {
    // Build first, so compile errors show before any server starts.
    cargo(
        &["build", "--workspace", "--bins", "--tests", "--benches"],
        false,
    )?;
    let cqlsh = python_tool("cqlsh", "cqlsh")?;
    let mut outcomes = Vec::new();
    if !secured_only {
        match single_node_tests(&cargo_args, &cqlsh).await? {
            Some(done) => outcomes.extend(done),
            None => return Ok(ExitCode::FAILURE),
        }
    }
    // A filter chosen for the single-node tests says nothing about the secured cluster's.
    if secured_only || cargo_args.is_empty() {
        match secured_cluster_tests(&cargo_args, &cqlsh).await? {
            Some(done) => outcomes.extend(done),
            None => return Ok(ExitCode::FAILURE),
        }
    }
    let failed = outcomes.iter().filter(|o| !o.ok()).count();
    println!(
        "drills: {} passed, {failed} failed",
        outcomes.len() - failed
    );
    if failed > 0 {
        eprintln!("xtask test: drills failed");
        return Ok(ExitCode::FAILURE);
    }
    println!("xtask test: all tests and drills passed");
    Ok(ExitCode::SUCCESS)
}

/// `cargo test` arguments with `extra` for the test binaries (after the user's `--`, if any).
fn test_args(cargo_args: &[String], extra: &[&str]) -> Vec<String> {
    let mut args = cargo_args.to_vec();
    if !args.iter().any(|a| a == "--") {
        args.push("--".into());
    }
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

/// Every test but the secured cluster's on the single-node test stack, then the quick drills.
/// `None` when a test failed.
async fn single_node_tests(
    cargo_args: &[String],
    cqlsh: &Path,
) -> anyhow::Result<Option<Vec<drill::Outcome>>> {
    let stack = Stack::test();
    stack.start(true).await.context("start the test stack")?;
    let mut cmd = Command::new(cargo_bin());
    cmd.args(["test", "--workspace"])
        .args(test_args(cargo_args, &["--skip", "secured::"]));
    cmd.envs(stack.env());
    cmd.env("IT_KAFKA_BROKER", stack.kafka_addr())
        .env("IT_CASSANDRA_NODES", stack.cql_addr())
        .env("IT_CQLSH", cqlsh)
        .env("PIPELINE_BIN_DIR", target_dir().join("debug"));
    let status = cmd.status().context("run cargo test");
    // The quick drills: crash, outage, broker restart and rebalance, reconciled exactly, in
    // both delivery modes (exactly-once also requires zero duplicates on every topic).
    let drills = match &status {
        Ok(s) if s.success() => Some(quick_drills(&stack, &[]).await),
        _ => None,
    };
    let stopped = stack.stop();
    let status = status?;
    stopped.context("stop the test stack")?;
    if !status.success() {
        eprintln!("xtask test: tests failed ({status})");
        return Ok(None);
    }
    Ok(Some(drills.expect("drills ran after passing tests")?))
}

/// `drills` (all of them when empty) with `--quick` on `stack`, in both delivery modes.
async fn quick_drills(
    stack: &Stack,
    drills: &[drill::Drill],
) -> anyhow::Result<Vec<drill::Outcome>> {
    let mut done = Vec::new();
    for delivery in [Delivery::AtLeastOnce, Delivery::ExactlyOnce] {
        println!("xtask test: quick drills on {}, {delivery:?}", stack.name);
        let args = drill::DrillArgs {
            drills: drills.to_vec(),
            quick: true,
            records: None,
            delivery,
            shape: stack::Shape::default(),
        };
        done.extend(drill::run(stack, &args).await?);
    }
    Ok(done)
}

/// The secured cluster (3 + 3 nodes, SASL_SSL, ACLs, TLS, roles): the `secured::` tests, cqlsh
/// as the analyst, and its quick drill. `None` when a test failed.
async fn secured_cluster_tests(
    cargo_args: &[String],
    cqlsh: &Path,
) -> anyhow::Result<Option<Vec<drill::Outcome>>> {
    let started = std::time::Instant::now();
    let stack = Stack::test().shaped(stack::Shape {
        cluster: true,
        secure: true,
    });
    stack
        .start(true)
        .await
        .context("start the secured test cluster")?;
    let result = async {
        // The tests' own names, allowed by prefix (see tests/it/secured.rs).
        stack.authorize(&secure::PipelineNames {
            raw: "sec_raw_".into(),
            valid: "sec_valid_".into(),
            dlq: "sec_dlq_".into(),
            stats: "sec_stats_".into(),
            alerts: "sec_alerts_".into(),
            by_destination: "sec_bydest_".into(),
            target_stats: "sec_targets_".into(),
            reader_groups: vec!["sec_reader_".into()],
            writer_group: "sec_writer_".into(),
            reader_transactional_id: "sec_reader_".into(),
            writer_transactional_id: "sec_writer_".into(),
            pattern: secure::acl::Pattern::Prefixed,
        })?;
        let sec = stack.security.as_ref().expect("a secured stack");
        let status = Command::new(cargo_bin())
            .args(["test", "--workspace"])
            .args(if cargo_args.is_empty() {
                test_args(cargo_args, &["secured::"])
            } else {
                cargo_args.to_vec()
            })
            .env("IT_SECURED_DIR", &stack.dir)
            .env("IT_SECURED_KAFKA_BROKER", stack.kafka_addr())
            .env("IT_SECURED_CASSANDRA_NODES", stack.cql_addr())
            .env("IT_CQLSH", cqlsh)
            .env("PIPELINE_BIN_DIR", target_dir().join("debug"))
            .status()
            .context("run cargo test")?;
        if !status.success() {
            eprintln!("xtask test: secured-cluster tests failed ({status})");
            return Ok(None);
        }
        // cqlsh as the documentation shows it: over TLS, as the read-only analyst.
        let out = cqlsh_command(&stack)?
            .args(["-e", "SELECT count(*) FROM ip_logs.access_logs;"])
            .output()
            .context("run cqlsh")?;
        if !out.status.success() {
            bail!(
                "cqlsh as the analyst over TLS failed (CA {}): {}",
                sec.ca().display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        println!("xtask test: cqlsh as the analyst over TLS answered");
        let outcomes = quick_drills(&stack, &[drill::Drill::LeaderKill]).await?;
        anyhow::Ok(Some(outcomes))
    }
    .await;
    let stopped = stack.stop();
    let result = result?;
    stopped.context("stop the secured test cluster")?;
    println!(
        "xtask test: the secured cluster's part took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(result)
}

/// cqlsh against node 1 of `stack`; on a secured stack over TLS (verifying the stack's CA)
/// as the `analyst` role.
pub fn cqlsh_command(stack: &Stack) -> anyhow::Result<Command> {
    let mut cmd = Command::new(python_tool("cqlsh", "cqlsh")?);
    cmd.args(["127.0.0.1", &stack.cql_port.to_string()]);
    if let Some(sec) = &stack.security {
        let (cqlshrc, credentials) = sec.cqlshrc(secure::CQL_ANALYST)?;
        cmd.arg("--ssl")
            .arg("--cqlshrc")
            .arg(cqlshrc)
            .arg("--credentials")
            .arg(credentials);
    }
    Ok(cmd)
}

/// Starts `bin` with `args` and `env`, stdout and stderr appended to `log`.
pub fn spawn_logged(
    bin: &Path,
    args: &[&str],
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<std::process::Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Command::new(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))
}

/// A command-line tool from PyPI, installed once into a venv under `target/`.
pub fn python_tool(package: &str, executable: &str) -> anyhow::Result<PathBuf> {
    let venv = target_dir().join(format!("venv-{package}"));
    let exe = venv.join("bin").join(executable);
    if exe.is_file() {
        return Ok(exe);
    }
    println!("installing {package} from PyPI into {}", venv.display());
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()?
        .success()
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q", package])
            .status()?
            .success();
    if !ok || !exe.is_file() {
        bail!(
            "cannot install {package} into {} (python3 with venv and pip is needed)",
            venv.display()
        );
    }
    Ok(exe)
}

pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"))
}

pub fn bin_path(name: &str, release: bool) -> PathBuf {
    target_dir()
        .join(if release { "release" } else { "debug" })
        .join(name)
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Runs cargo in the project root (optionally with `--release`).
pub fn cargo(args: &[&str], release: bool) -> anyhow::Result<()> {
    let mut cmd = Command::new(cargo_bin());
    cmd.args(args).current_dir(project_root());
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .with_context(|| format!("run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

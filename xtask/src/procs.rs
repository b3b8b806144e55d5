//! The pipeline's service binaries as processes, shared by `services`, `test`, `drill`,
//! `bench` and `soak`: spawning one with its output appended to a log, migrating a keyspace,
//! stopping one.

use std::{
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

/// A service process; killed if still running when dropped.
pub struct Proc {
    /// The binary's name.
    pub name: &'static str,
    /// The process.
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts the `name` binary of the debug or release build with `args` and `env`, stdout
    /// and stderr appended to `log`.
    pub fn spawn(
        name: &'static str,
        release: bool,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = crate::spawn_logged(&crate::bin_path(name, release), &args, env, log)?;
        Ok(Self { name, child })
    }

    /// SIGTERM, then waits (SIGKILL after 40 s); fails unless the process exited cleanly.
    pub fn sigterm(&mut self) -> anyhow::Result<()> {
        crate::stack::terminate(self.child.id() as i32, Duration::from_secs(40));
        let status = self.child.wait()?;
        if !status.success() {
            bail!("{} exited with {status} on SIGTERM", self.name);
        }
        Ok(())
    }

    /// SIGKILL, and waits.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Fails with [`Exited`] when the process has exited (`log` names where to look).
    pub fn running(&mut self, log: &Path) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(Exited {
                name: self.name,
                status,
                log: log.display().to_string(),
                said: last_words(self.name, log),
            }
            .into()),
        }
    }
}

/// A service that should be running has exited.
#[derive(Debug, thiserror::Error)]
#[error("the {name} exited ({status}){said}; see {log}")]
pub struct Exited {
    name: &'static str,
    status: ExitStatus,
    log: String,
    /// `: ` and the error the service printed last (`<name>: <error>`), if any.
    said: String,
}

/// The last error line `name` printed into `log` (every service ends a failed run with one
/// `<name>: <error>` line), as `: <line>`, or empty; so a failure in CI names its cause.
fn last_words(name: &str, log: &Path) -> String {
    let prefix = format!("{name}: ");
    std::fs::read(log)
        .ok()
        .and_then(|bytes| {
            String::from_utf8_lossy(&bytes)
                .lines()
                .rev()
                .find(|line| line.starts_with(&prefix))
                .map(|line| format!(": {line}"))
        })
        .unwrap_or_default()
}

/// `cassandra-writer migrate` of the debug or release build with `env` (the keyspace is
/// `CASSANDRA_KEYSPACE`); its output goes to `log`, or is dropped.
pub fn migrate(release: bool, env: &[(String, String)], log: Option<&Path>) -> anyhow::Result<()> {
    let mut cmd = Command::new(crate::bin_path("cassandra-writer", release));
    cmd.arg("migrate")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn,scylla=error")
        .stdout(Stdio::null());
    if let Some(log) = log {
        cmd.stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?,
        );
    }
    let status = cmd.status().context("run cassandra-writer migrate")?;
    if !status.success() {
        match log {
            Some(log) => bail!(
                "cassandra-writer migrate failed ({status}); see {}",
                log.display()
            ),
            None => bail!("cassandra-writer migrate failed ({status})"),
        }
    }
    Ok(())
}

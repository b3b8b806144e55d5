//! `cargo xtask up`: the whole pipeline on this machine.

use std::{
    fs,
    process::{Child, Command, ExitCode, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;

use crate::stack::{self, Stack};

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Producer rate in logs/s (0 = as fast as possible).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Extra producer arguments, e.g. `--producer-arg=--scenario=port-scan`.
    #[arg(long = "producer-arg", allow_hyphen_values = true)]
    producer_args: Vec<String>,
    /// Build and run the services with optimisations.
    #[arg(long)]
    release: bool,
    /// Partitions per topic.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Begin from an empty broker.
    #[arg(long)]
    clean: bool,
    #[command(flatten)]
    shape: stack::Shape,
}

const SERVICES: [&str; 3] = ["cassandra-writer", "stream-reader", "producer"];

pub async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let stack = Stack::dev(args.partitions).shaped(args.shape);
    stack.start(args.clean).await?;
    // From here on everything this command started is stopped however it ends: Ctrl-C,
    // SIGTERM, SIGHUP, an error, or a panic.
    let mut running = Running {
        stack: &stack,
        children: Vec::new(),
    };
    let mut build = vec!["build", "--quiet"];
    for s in SERVICES {
        build.extend(["-p", s]);
    }
    crate::cargo(&build, args.release)?;
    let logs = stack.dir.join("services");
    fs::create_dir_all(&logs)?;

    for name in SERVICES {
        let log = fs::File::create(logs.join(format!("{name}.log")))?;
        let mut cmd = Command::new(crate::bin_path(name, args.release));
        if name == "producer" {
            cmd.arg("--rate")
                .arg(args.rate.to_string())
                .args(&args.producer_args);
        }
        let child = stack::detached(&mut cmd)
            .envs(stack.env_of(name, &[]))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        say(format_args!(
            "{name:<16} started (pid {}), log {}",
            child.id(),
            logs.join(format!("{name}.log")).display()
        ));
        running.children.push((name, child));
    }
    say("pipeline running; status every 5 s; Ctrl-C stops everything");
    say(
        "metrics: curl -s 127.0.0.1:9101/metrics (producer), :9102 (stream-reader), :9103 (cassandra-writer)",
    );
    let shape = match (args.shape.cluster, args.shape.secure) {
        (false, false) => "",
        (true, false) => " --cluster",
        (false, true) => " --secure",
        (true, true) => " --cluster --secure",
    };
    say(format_args!(
        "query:   cargo xtask cqlsh{shape} -e \"USE ip_logs; SELECT * FROM access_logs LIMIT 10;\""
    ));

    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    let mut previous: Option<Scrape> = None;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => break,
            _ = tick.tick() => {
                let now = Scrape::take().await;
                if let Some(prev) = &previous {
                    say(now.status_line(prev));
                }
                previous = Some(now);
                for (name, child) in running.children.iter_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        say(format_args!("{name} exited ({status}); see {}", logs.join(format!("{name}.log")).display()));
                    }
                }
            }
        }
    }
    say(
        "stopping: producer, stream-reader, cassandra-writer (they drain and commit), then the stack",
    );
    drop(running);
    Ok(ExitCode::SUCCESS)
}

/// What `up` started; dropping it stops the services (last started first: they drain and
/// commit) and then the stack.
struct Running<'a> {
    stack: &'a Stack,
    children: Vec<(&'static str, Child)>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        for (name, mut child) in self.children.drain(..).rev() {
            stack::terminate(child.id() as i32, Duration::from_secs(30));
            let _ = child.wait();
            say(format_args!("{name:<16} stopped"));
        }
        if let Err(error) = self.stack.stop() {
            eprintln!("stopping the stack: {error:#}");
        }
    }
}

/// Prints a line. A stdout that is gone (`cargo xtask up | tee up.log`, and Ctrl-C ended `tee`
/// first) is no reason to stop before the pipeline is stopped: the failed write points stdout
/// at /dev/null, so every later print (ours and the stack's) succeeds unseen.
fn say(line: impl std::fmt::Display) {
    use std::io::Write as _;
    if writeln!(std::io::stdout(), "{line}").is_err() {
        silence_stdout();
    }
}

fn silence_stdout() {
    if let Ok(null) = fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd as _;
        #[allow(unsafe_code)] // reason: dup2(2) has no std wrapper; both descriptors are open
        unsafe {
            libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO);
        }
    }
}

/// The services' metrics endpoints (their default METRICS_ADDR).
const ENDPOINTS: [u16; 3] = [9101, 9102, 9103];

/// One scrape of every service's /metrics.
struct Scrape {
    at: std::time::Instant,
    samples: Vec<(String, String, f64)>,
}

impl Scrape {
    async fn take() -> Self {
        let mut samples = Vec::new();
        for port in ENDPOINTS {
            if let Some(body) = get_metrics(port).await {
                samples.extend(
                    body.lines()
                        .filter(|l| !l.starts_with('#'))
                        .filter_map(|l| {
                            let (series, value) = l.rsplit_once(' ')?;
                            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
                            Some((name.to_owned(), labels.to_owned(), value.parse().ok()?))
                        }),
                );
            }
        }
        Self {
            at: std::time::Instant::now(),
            samples,
        }
    }

    fn sum(&self, name: &str, label: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && l.contains(label))
            .map(|s| s.2)
            .sum()
    }

    /// Approximate quantile of a histogram over the interval since `prev` (bucket upper bound).
    fn quantile(&self, prev: &Scrape, name: &str, q: f64) -> Option<f64> {
        let bucket = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|(n, _, _)| *n == bucket)
            .filter_map(|(_, labels, v)| {
                let le = labels.split("le=\"").nth(1)?.split('"').next()?;
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                let before = prev
                    .samples
                    .iter()
                    .find(|(n, l, _)| *n == bucket && l == labels)
                    .map_or(0.0, |s| s.2);
                Some((le, v - before))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        buckets
            .iter()
            .find(|(_, c)| *c >= q * total)
            .map(|(le, _)| *le)
    }

    fn status_line(&self, prev: &Scrape) -> String {
        let secs = self.at.duration_since(prev.at).as_secs_f64().max(1e-3);
        let rate = |name: &str, label: &str| (self.sum(name, label) - prev.sum(name, label)) / secs;
        let ms = |v: Option<f64>| match v {
            Some(v) if v.is_finite() => format!("≤{:.0}ms", v * 1000.0),
            Some(_) => ">60s".to_owned(),
            None => "-".to_owned(),
        };
        format!(
            "produced {:>6.0}/s | validated {:>6.0}/s | dlq {:>4.0}/s | written {:>6.0}/s | lag {:>6.0} | e2e p50 {} p99 {} | write retries {:.0}",
            rate("producer_records_delivered_total", ""),
            rate("reader_records_out_total", "validated"),
            rate("reader_records_out_total", "dlq"),
            rate("writer_rows_written_total", ""),
            self.sum("kafka_consumer_lag", ""),
            ms(self.quantile(prev, "writer_e2e_latency_seconds", 0.5)),
            ms(self.quantile(prev, "writer_e2e_latency_seconds", 0.99)),
            self.sum("writer_write_retries_total", ""),
        )
    }
}

pub async fn get_metrics(port: u16) -> Option<String> {
    get(port, "/metrics").await.map(|(_, body)| body)
}

/// Whether the service behind `port` answers /readyz with 200.
pub async fn is_ready(port: u16) -> bool {
    get(port, "/readyz")
        .await
        .is_some_and(|(status, _)| status.contains(" 200 "))
}

/// A plain HTTP/1.1 GET on 127.0.0.1: (status line, body).
async fn get(port: u16, path: &str) -> Option<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

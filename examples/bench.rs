//! The benchmark: a load generator for `orchestrator-server`, with nothing else to install.
//!
//! It seeds N workflows, starts the server binary beside this one as a child process (so its
//! start-up time and peak RSS can be read), then, at each concurrency, drives for a fixed time
//!
//! - `POST /workflow/start` of new features,
//! - `GET /workflow/{id}` of random seeded features,
//! - `POST /workflow/{id}/advance` of seeded features, each id used by one request at a time,
//!   triggers alternating `agent_complete` / `human_rejected`,
//!
//! and reports throughput, p50/p99/p99.9 latency, errors and the server's peak RSS. In the same
//! run it measures this disk's raw rate of one-row durable SQLite commits (WAL,
//! `synchronous=FULL`) and prints the advance throughput as a ratio to it.
//!
//! ```sh
//! cargo build --release -p orchestrator-server -p examples --bins --examples
//! target/release/examples/bench                                 # SQLite, 1 000 workflows
//! target/release/examples/bench --workflows 1000000             # SQLite, a million
//! target/release/examples/bench --database-url postgres://postgres@127.0.0.1/bench  # an empty database
//! target/release/examples/bench --smoke                         # a few seconds, for CI
//! target/release/examples/bench --webhook                       # every event also POSTed to a receiver
//! target/release/examples/bench --webhook --webhook-types gate.overdue  # a subscription, no deliveries
//! target/release/examples/bench --streams 1000 --stream-rate 1000 --seconds 10  # SSE delay
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use chrono::Utc;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use orchestrator_core::{Description, FeatureId, Metadata, TransitionContext, Workflow};
use orchestrator_server::storage::{DatabaseUrl, connect};

#[path = "bench/streams.rs"]
mod streams;

#[derive(Parser, Debug)]
#[command(about = "Load generator for orchestrator-server")]
struct Args {
    /// Workflows stored before the load starts (at least one).
    #[arg(long, default_value_t = 1000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    workflows: usize,
    /// Seconds each operation runs at each concurrency.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrency levels (clients, each with its own connection).
    #[arg(long, value_delimiter = ',', default_value = "1,32,128")]
    concurrency: Vec<usize>,
    /// Database for the server; default a fresh SQLite file in a temporary directory.
    /// A PostgreSQL database must be empty.
    #[arg(long)]
    database_url: Option<String>,
    /// The server's DATABASE_POOL_SIZE (its default when absent).
    #[arg(long)]
    pool_size: Option<u32>,
    /// The server binary; default `orchestrator-server` beside this one.
    #[arg(long)]
    server: Option<PathBuf>,
    /// A short run for CI: 200 workflows, 1 s per phase, concurrency 1 and 8.
    #[arg(long)]
    smoke: bool,
    /// Instead of the phases: advances only, at the first concurrency level, for this many
    /// seconds, reported minute by minute with the largest write-ahead log seen (SQLite).
    #[arg(long, value_name = "SECONDS")]
    soak: Option<f64>,
    /// Subscribe a webhook (to a receiver in this process) before the load, so every event is
    /// also delivered; reports the deliveries received.
    #[arg(long)]
    webhook: bool,
    /// With --webhook: subscribe it to these event types only (comma-separated), e.g.
    /// `gate.overdue`, which this load never makes: the cost of a subscription without
    /// deliveries.
    #[arg(long, value_delimiter = ',', requires = "webhook")]
    webhook_types: Vec<String>,
    /// Instead of the phases: this many server-sent event streams open while advances run at
    /// --stream-rate per second for --seconds; reports each event's delay to each stream.
    #[arg(long, value_name = "CONSUMERS")]
    streams: Option<usize>,
    /// Advances per second during --streams.
    #[arg(long, default_value_t = 1000)]
    stream_rate: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.workflows = 200;
        args.seconds = 1.0;
        args.concurrency = vec![1, 8];
    }
    let scratch = tempfile::TempDir::new()?;
    let database_url = match &args.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite:///{}", scratch.path().join("bench.db").display()),
    };
    let server_bin = match &args.server {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("no directory above this binary")?
            .join("orchestrator-server"),
    };
    if !server_bin.exists() {
        bail!(
            "{} not found: build it first (cargo build {}-p orchestrator-server)",
            server_bin.display(),
            if cfg!(debug_assertions) {
                ""
            } else {
                "--release "
            }
        );
    }

    println!("# orchestrator benchmark");
    println!();
    println!("- date: {}", Utc::now().format("%Y-%m-%d %H:%M UTC"));
    println!(
        "- machine: {} cores, {}",
        num_cpus(),
        first_line("/proc/cpuinfo", "model name")
    );
    println!("- server: {}", server_bin.display());
    if cfg!(debug_assertions) {
        println!("- build: debug (its figures mean little: measure a release build)");
    }
    println!(
        "- database: {}",
        if database_url.starts_with("postgres") {
            "PostgreSQL"
        } else {
            "SQLite (WAL, synchronous=FULL)"
        }
    );
    println!("- workflows stored before the load: {}", args.workflows);
    println!("- {} s per operation and concurrency", args.seconds);

    let machine_before = machine_ticks();
    let raw = raw_sqlite_commit_rate(scratch.path(), if args.smoke { 0.3 } else { 2.0 })?;
    println!(
        "- raw SQLite one-row durable commits on this disk: {raw:.0}/s (host steal {} %)",
        steal_percent(machine_ticks(), machine_before)
    );

    let started = Instant::now();
    seed(&database_url, args.workflows).await?;
    println!(
        "- seeding {} workflows took {:.1} s",
        args.workflows,
        started.elapsed().as_secs_f64()
    );

    let port = free_port()?;
    let (mut server, startup) = launch(&server_bin, &database_url, port, args.pool_size).await?;
    println!(
        "- start-up to a healthy /health on the seeded database: {:.1} ms",
        startup.as_secs_f64() * 1e3
    );
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let delivered = if args.webhook {
        let (url, count) = streams::webhook_receiver().await?;
        streams::create_webhook(address, &url, &args.webhook_types).await?;
        if args.webhook_types.is_empty() {
            println!("- a webhook delivers every event to a receiver in the benchmark's process");
        } else {
            println!(
                "- a webhook delivers the events of type {} to a receiver in the benchmark's process",
                args.webhook_types.join(", ")
            );
        }
        Some(count)
    } else {
        None
    };

    if let Some(consumers) = args.streams {
        let next_trigger: Arc<Vec<AtomicU8>> =
            Arc::new((0..args.workflows).map(|_| AtomicU8::new(0)).collect());
        println!(
            "- {consumers} event streams open while advances run at {}/s for {} s",
            args.stream_rate, args.seconds
        );
        let rss_before = peak_rss_mib(server.id());
        let report = streams::run(
            address,
            consumers,
            args.stream_rate,
            args.seconds,
            args.workflows,
            next_trigger,
        )
        .await?;
        println!();
        println!(
            "| streams | advances/s | events per stream (fewest) | delay p50 ms | p99 ms | p99.9 ms | max ms | streams dropped | server peak RSS MiB |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {consumers} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
            report.advances_per_second,
            report.fewest_events,
            report.percentile(0.5),
            report.percentile(0.99),
            report.percentile(0.999),
            report.percentile(1.0),
            report.dropped,
            peak_rss_mib(server.id()).map_or("-".to_owned(), |r| format!("{r:.1}")),
        );
        if let Some(rss) = rss_before {
            println!();
            println!("- server RSS before the streams opened: {rss:.1} MiB");
        }
        let _ = server.kill();
        let _ = server.wait();
        if args.smoke && (report.dropped > 0 || report.fewest_events == 0) {
            bail!("a stream ended early or received nothing");
        }
        return Ok(());
    }

    if let Some(seconds) = args.soak {
        let wal =
            (!database_url.starts_with("postgres")).then(|| scratch.path().join("bench.db-wal"));
        let clients = args.concurrency.first().copied().unwrap_or(32);
        let failures = soak(address, &server, clients, seconds, args.workflows, wal).await?;
        let _ = server.kill();
        let _ = server.wait();
        if failures > 0 {
            bail!("{failures} requests failed");
        }
        return Ok(());
    }

    println!();
    println!(
        "| operation | clients | requests | per second | p50 ms | p99 ms | p99.9 ms | max ms | errors | server peak RSS MiB | server CPU µs/request | host steal % |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let next_trigger: Arc<Vec<AtomicU8>> =
        Arc::new((0..args.workflows).map(|_| AtomicU8::new(0)).collect());
    let mut advance_at = Vec::new();
    let mut pgbench_at = Vec::new();
    let postgres = database_url.starts_with("postgres");
    if postgres && !args.smoke {
        pgbench_init(&database_url)?;
    }
    let mut failures = 0;
    for &clients in &args.concurrency {
        for operation in [Operation::Start, Operation::Get, Operation::Advance] {
            reset_peak_rss(server.id());
            let cpu_before = cpu_seconds(server.id());
            let machine_before = machine_ticks();
            let report = run(
                address,
                operation,
                clients,
                args.seconds,
                args.workflows,
                next_trigger.clone(),
            )
            .await?;
            let rss = peak_rss_mib(server.id());
            let cpu = micros_per_request(cpu_seconds(server.id()), cpu_before, report.requests);
            let steal = steal_percent(machine_ticks(), machine_before);
            println!(
                "| {} | {clients} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {steal} |",
                operation.name(),
                report.requests,
                report.per_second,
                report.percentile(0.50),
                report.percentile(0.99),
                report.percentile(0.999),
                report.percentile(1.0),
                report.errors,
                rss.map_or("-".to_owned(), |r| format!("{r:.1}")),
                cpu,
            );
            if let Some(sample) = &report.first_error {
                eprintln!("first error ({} {clients}): {sample}", operation.name());
            }
            failures += report.errors;
            if operation == Operation::Advance {
                advance_at.push((clients, report.per_second));
                if postgres && !args.smoke {
                    let machine_before = machine_ticks();
                    let tps = pgbench(&database_url, clients, args.seconds);
                    let steal = steal_percent(machine_ticks(), machine_before);
                    pgbench_at.push(tps.map(|tps| (tps, steal)));
                }
            }
        }
    }
    println!();
    for (n, (clients, per_second)) in advance_at.into_iter().enumerate() {
        match pgbench_at.get(n) {
            Some(Ok((tps, steal))) => println!(
                "- durable advances at {clients} clients: {per_second:.0}/s = {:.2} × pgbench -M prepared simple-update at {clients} clients on the same server ({tps:.0} tps, host steal {steal} %)",
                per_second / tps
            ),
            Some(Err(e)) => println!(
                "- durable advances at {clients} clients: {per_second:.0}/s (pgbench failed: {e})"
            ),
            None => println!(
                "- durable advances at {clients} clients: {per_second:.0}/s = {:.2} × the raw commit rate",
                per_second / raw
            ),
        }
    }
    if let Some(count) = delivered {
        // Let the worker catch up, then count.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let received = count.load(Ordering::Relaxed);
        println!("- webhook deliveries received: {received}");
        if args.smoke && received == 0 {
            bail!("the webhook received nothing");
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    if args.smoke && failures > 0 {
        bail!("{failures} requests failed");
    }
    Ok(())
}

/// Advances at `clients` for `seconds`, one line per minute: throughput, latency, the largest
/// write-ahead log seen in that minute, the server's peak RSS. Returns the failed requests.
async fn soak(
    address: SocketAddr,
    server: &Child,
    clients: usize,
    seconds: f64,
    workflows: usize,
    wal: Option<PathBuf>,
) -> anyhow::Result<usize> {
    println!("- soak: advances at {clients} clients for {seconds:.0} s");
    println!();
    println!(
        "| minute | advances/s | p50 ms | p99 ms | errors | largest WAL MiB | server peak RSS MiB | server CPU µs/advance | writer thread CPU µs/advance | host steal % |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let next_trigger: Arc<Vec<AtomicU8>> =
        Arc::new((0..workflows).map(|_| AtomicU8::new(0)).collect());
    let largest_wal = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = wal.map(|path| {
        let largest = largest_wal.clone();
        tokio::spawn(async move {
            loop {
                let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                largest.fetch_max(size, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });
    let mut failures = 0;
    let mut rates = Vec::new();
    let mut remaining = seconds;
    let mut minute = 0;
    while remaining > 0.0 {
        let chunk = remaining.min(60.0);
        remaining -= chunk;
        minute += 1;
        largest_wal.store(0, Ordering::Relaxed);
        reset_peak_rss(server.id());
        let cpu_before = cpu_seconds(server.id());
        let writer_before = writer_cpu_seconds(server.id());
        let machine_before = machine_ticks();
        let report = run(
            address,
            Operation::Advance,
            clients,
            chunk,
            workflows,
            next_trigger.clone(),
        )
        .await?;
        let cpu = micros_per_request(cpu_seconds(server.id()), cpu_before, report.requests);
        let writer = micros_per_request(
            writer_cpu_seconds(server.id()),
            writer_before,
            report.requests,
        );
        let steal = steal_percent(machine_ticks(), machine_before);
        let wal_mib = largest_wal.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0);
        println!(
            "| {minute} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {cpu} | {writer} | {steal} |",
            report.per_second,
            report.percentile(0.50),
            report.percentile(0.99),
            report.errors,
            if sampler.is_some() {
                format!("{wal_mib:.1}")
            } else {
                "-".to_owned()
            },
            peak_rss_mib(server.id()).map_or("-".to_owned(), |r| format!("{r:.1}")),
        );
        if let Some(sample) = &report.first_error {
            eprintln!("first error (minute {minute}): {sample}");
        }
        failures += report.errors;
        rates.push(report.per_second);
    }
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    if let (Some(first), Some(last)) = (rates.first(), rates.last()) {
        println!();
        println!(
            "- last minute's throughput is {:.1}% of the first's",
            last / first * 100.0
        );
    }
    Ok(failures)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Start,
    Get,
    Advance,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Start => "start",
            Operation::Get => "get",
            Operation::Advance => "advance",
        }
    }
}

struct Report {
    requests: usize,
    errors: usize,
    per_second: f64,
    /// Sorted latencies in microseconds.
    latencies: Vec<u32>,
    first_error: Option<String>,
}

impl Report {
    /// The latency at quantile `q`, in milliseconds.
    fn percentile(&self, q: f64) -> f64 {
        percentile(&self.latencies, q)
    }
}

/// The value at quantile `q` of `sorted` microseconds, in milliseconds (0 when empty).
fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[index]) / 1e3
}

fn seeded_id(n: usize) -> String {
    format!("wf-{n:07}")
}

/// Stores `count` workflows in PHASE_1 through the server's own storage code, before the
/// server starts.
async fn seed(database_url: &str, count: usize) -> anyhow::Result<()> {
    let url: DatabaseUrl = database_url.parse()?;
    let repository = connect(&url, 2).await?;
    let now = Utc::now();
    let mut batch = Vec::with_capacity(50_000);
    for n in 0..count {
        batch.push(Workflow::start(
            FeatureId::parse(seeded_id(n))?,
            Description::parse("seeded by the benchmark")?,
            Metadata::default(),
            TransitionContext::at(now),
        ));
        if batch.len() == batch.capacity() || n + 1 == count {
            repository.import(&batch).await?;
            batch.clear();
        }
    }
    // Let go of the file (and its write lock) before the server opens it.
    repository.close().await;
    Ok(())
}

/// The server's process, stopped when dropped: also when the benchmark fails half-way.
struct Server(Child);

impl std::ops::Deref for Server {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn launch(
    binary: &Path,
    database_url: &str,
    port: u16,
    pool_size: Option<u32>,
) -> anyhow::Result<(Server, Duration)> {
    let started = Instant::now();
    let mut command = Command::new(binary);
    // Only the settings below: an exported token, principals file or pool size (as a `.env`
    // loaded into the shell has them) would change what is measured, or refuse every request.
    command.env_clear();
    if let Some(size) = pool_size {
        command.env("DATABASE_POOL_SIZE", size.to_string());
    }
    let child = command
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .env("AGENT_HUB_URL", "http://127.0.0.1:9")
        .env("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
        .env("MAX_CONNECTIONS", "4096")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let child = Server(child);
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(mut sender) = open(address).await
            && let Ok((status, _)) = call(&mut sender, Method::GET, "/health", None).await
            && status == StatusCode::OK
        {
            return Ok((child, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bail!("the server did not become healthy in 30 s")
}

async fn open(address: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn call(
    sender: &mut SendRequest<Full<Bytes>>,
    method: Method,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(Full::new(body.map(Bytes::from).unwrap_or_default()))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

async fn run(
    address: SocketAddr,
    operation: Operation,
    clients: usize,
    seconds: f64,
    workflows: usize,
    next_trigger: Arc<Vec<AtomicU8>>,
) -> anyhow::Result<Report> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let next_trigger = next_trigger.clone();
        let run_id = run_id[..8].to_owned();
        tasks.push(tokio::spawn(async move {
            let mut sender = open(address).await?;
            let mut latencies = Vec::with_capacity(65_536);
            let mut errors = 0;
            let mut first_error = None;
            let mut rng = 0x9E37_79B9_7F4A_7C15_u64 ^ (worker as u64 + 1);
            // The seeded ids this worker owns for advances: no other worker touches them.
            let owned: Vec<usize> = (worker..workflows).step_by(clients).collect();
            let mut n = 0usize;
            while Instant::now() < deadline {
                let (method, path, body) = match operation {
                    Operation::Start => (
                        Method::POST,
                        "/workflow/start".to_owned(),
                        Some(format!(r#"{{"feature_id":"new-{run_id}-{worker}-{n}","description":"benchmark"}}"#)),
                    ),
                    Operation::Get => {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        (Method::GET, format!("/workflow/{}", seeded_id(rng as usize % workflows)), None)
                    }
                    Operation::Advance => {
                        if owned.is_empty() {
                            break;
                        }
                        let id = owned[n % owned.len()];
                        // A rejection needs a reason.
                        let body = if next_trigger[id].load(Ordering::Relaxed) == 0 { r#"{"trigger":"agent_complete"}"# } else { r#"{"trigger":"human_rejected","reason":"rework"}"# };
                        (Method::POST, format!("/workflow/{}/advance", seeded_id(id)), Some(body.to_owned()))
                    }
                };
                let sent = Instant::now();
                let outcome = call(&mut sender, method, &path, body).await;
                let micros = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                match outcome {
                    Ok((status, _)) if status.is_success() => {
                        latencies.push(micros);
                        if operation == Operation::Advance {
                            let id = owned[n % owned.len()];
                            next_trigger[id].fetch_xor(1, Ordering::Relaxed);
                        }
                    }
                    Ok((status, body)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{status}: {}", String::from_utf8_lossy(&body)));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                        sender = open(address).await?;
                    }
                }
                n += 1;
            }
            anyhow::Ok((latencies, errors, first_error))
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let (mut l, e, f) = task.await??;
        latencies.append(&mut l);
        errors += e;
        first_error = first_error.or(f);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(Report {
        requests: latencies.len() + errors,
        errors,
        per_second: latencies.len() as f64 / elapsed,
        latencies,
        first_error,
    })
}

/// Creates pgbench's tables (scale 1) beside ours, for the comparison run at each concurrency.
fn pgbench_init(database_url: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("pgbench")
        .args(["-i", "-q", "-s", "1", database_url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("pgbench not found: install PostgreSQL's client tools for the comparison")?;
    if !status.success() {
        bail!("pgbench -i failed");
    }
    Ok(())
}

/// pgbench's built-in simple-update (one UPDATE, one SELECT, one INSERT per transaction,
/// prepared statements) at `clients` for `seconds`: its transactions per second.
fn pgbench(database_url: &str, clients: usize, seconds: f64) -> anyhow::Result<f64> {
    let output = std::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-b", "simple-update"])
        .args(["-j", &clients.min(2).to_string()])
        .args([
            "-c",
            &clients.to_string(),
            "-T",
            &(seconds.ceil() as u64).max(1).to_string(),
        ])
        .arg(database_url)
        .output()
        .context("cannot run pgbench")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .with_context(|| {
            let errors = String::from_utf8_lossy(&output.stderr);
            format!("no tps in pgbench's output: {}", errors.trim())
        })
}

/// One-row transactions, each durable before the next (WAL, synchronous=FULL), for `seconds`.
fn raw_sqlite_commit_rate(dir: &Path, seconds: f64) -> anyhow::Result<f64> {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, SqliteConnection};
    let path = dir.join("raw.db");
    let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
    conn.batch_execute(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE raw (id INTEGER PRIMARY KEY, payload TEXT NOT NULL);",
    )?;
    let started = Instant::now();
    let mut commits = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        conn.batch_execute("BEGIN; INSERT INTO raw (payload) VALUES ('one durable row of about a hundred bytes, like a transition in the history table'); COMMIT;")?;
        commits += 1;
    }
    Ok(commits as f64 / started.elapsed().as_secs_f64())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Resets the process's peak RSS counter (Linux `clear_refs` 5), so each phase reports its own.
fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU microseconds per request between two readings of CPU seconds, as a table cell (`-`
/// when either reading is missing).
fn micros_per_request(after: Option<f64>, before: Option<f64>, requests: usize) -> String {
    after.zip(before).map_or("-".to_owned(), |(after, before)| {
        format!("{:.0}", (after - before) / requests.max(1) as f64 * 1e6)
    })
}

/// CPU time the process has used so far, user and system (Linux `/proc/<pid>/stat`, in
/// clock ticks of 1/100 s). Unlike throughput it does not count time a busy host took the
/// CPU away (steal), so it compares builds on a shared machine.
fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// The machine's CPU time so far, in clock ticks: all of it, and the part a busy host took
/// away from this virtual machine (steal), from the first line of Linux's `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    Some((ticks.iter().sum(), *ticks.get(7)?))
}

/// The share of the machine's CPU time the host took away between two readings of
/// [`machine_ticks`], in percent, as a table cell (`-` when unknown). Throughput measured
/// while it is high says more about the host's other tenants than about the server.
fn steal_percent(after: Option<(u64, u64)>, before: Option<(u64, u64)>) -> String {
    after
        .zip(before)
        .and_then(
            |((total_after, steal_after), (total_before, steal_before))| {
                let total = total_after.checked_sub(total_before).filter(|&t| t > 0)?;
                let steal = steal_after.checked_sub(steal_before)?;
                Some(format!("{:.0}", steal as f64 / total as f64 * 100.0))
            },
        )
        .unwrap_or_else(|| "-".to_owned())
}

/// CPU time of the server's SQLite writer thread so far (the thread every write waits for).
fn writer_cpu_seconds(pid: u32) -> Option<f64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(Result::ok)
        .find(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.trim() == "sqlite-writer")
        })
        .and_then(|task| stat_cpu_seconds(&task.path().join("stat").to_string_lossy()))
}

/// CPU seconds (user and system) in a `/proc` `stat` file.
fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces: count fields after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn first_line(path: &str, key: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

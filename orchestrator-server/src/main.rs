//! The `orchestrator-server` binary: parse the configuration, start tracing, open storage,
//! bind, serve until SIGINT or SIGTERM. Everything else lives in the library.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use orchestrator_server::config::{Command, PrincipalCommand, Task};
use orchestrator_server::{Config, bind, build_app, principals, serve, telemetry};

/// Blocking threads beside one per SQLite reading connection: the name lookups the server
/// makes at most at once (the webhooks' deliveries and checks, and the Agent Hub's), and one
/// for start-up and shutdown.
const BLOCKING_THREADS_BESIDE_READS: usize = orchestrator_server::NAME_LOOKUPS_AT_ONCE + 1;

fn main() -> ExitCode {
    if Task::named_by(std::env::args_os().nth(1).as_deref()) {
        return match Task::try_parse() {
            Ok(task) => run_command(&task.command),
            Err(e) => refused(&e),
        };
    }
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(e) => return refused(&e),
    };
    if let Some(command) = &config.command {
        return run_command(command);
    }
    telemetry::init(&config.log, config.log_format);
    raise_open_files(config.max_connections);
    // SQLite reads run on blocking threads, at most one per reading connection; a few more
    // for start-up, shutdown and name lookups. Without a bound, the pool keeps spawning
    // threads whenever a read is handed over before the last one's thread is idle again (55
    // threads under 32 clients, measured), each holding a stack and an allocator arena.
    let blocking_threads = usize::try_from(config.database_pool_size)
        .unwrap_or(usize::MAX)
        .saturating_add(BLOCKING_THREADS_BESIDE_READS);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ran = runtime.block_on(run(config));
    let code = exit_code(ran);
    // Blocking work still running (a name lookup waiting for a resolver that drops queries)
    // gets a few seconds, not as long as it takes: what matters was stored and closed.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    telemetry::flush(LOG_FLUSH);
    code
}

/// How long the log's last lines may take to reach standard output as the process ends.
const LOG_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// Raises the soft limit of open files to the hard one (as nginx and Go programs do): the
/// server holds one per connection, event stream and database connection, and systemd and
/// container runtimes often start services at a soft 1024, below `MAX_CONNECTIONS`' default,
/// so that past it connections failed before the limit meant for them applied. Warns when even
/// the hard limit leaves less than `MAX_CONNECTIONS` + 100.
fn raise_open_files(max_connections: u32) {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let needed = u64::from(max_connections) + 100;
        let limit = getrlimit(Resource::Nofile);
        // An unlimited hard limit (macOS's usual) is not a soft limit every system takes:
        // ask for a finite one, enough and then some.
        let target = limit.maximum.unwrap_or_else(|| needed.max(65_536));
        let in_force = match limit.current {
            Some(current) if target > current => {
                let raised = Rlimit {
                    current: Some(target),
                    maximum: limit.maximum,
                };
                match setrlimit(Resource::Nofile, raised) {
                    Ok(()) => Some(target),
                    Err(e) => {
                        tracing::debug!(error = %e, "the open-file limit was not raised");
                        Some(current)
                    }
                }
            }
            current => current,
        };
        if let Some(open_files) = in_force.filter(|limit| *limit < needed) {
            tracing::warn!(
                open_files,
                max_connections,
                "the open-file limit is below MAX_CONNECTIONS + 100: past it, connections, \
                 streams and database connections fail; raise the limit (ulimit -n, \
                 LimitNOFILE=, a container's ulimits) or lower MAX_CONNECTIONS"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = max_connections;
}

/// How the server ended: 0 after a drain; a start-up failure said on stderr, exit 2 for one
/// like a bad setting, else 1.
fn exit_code(ran: Result<(), orchestrator_server::StartupError>) -> ExitCode {
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ orchestrator_server::StartupError::Principals(_)) => {
            // A bad setting like those clap refuses: one line naming it, exit 2.
            eprintln!("error: ORCHESTRATOR_PRINCIPALS_FILE: {e}");
            ExitCode::from(2)
        }
        Err(e @ orchestrator_server::StartupError::GateDefaults(_)) => {
            // A bad setting: one line naming it, exit 2.
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e @ orchestrator_server::StartupError::DatabaseInUse(_)) => {
            // Like a bad setting: one line, exit 2.
            eprintln!("error: DATABASE_URL: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What clap refused, said: a bad setting or argument on one line (exit 2); `principal` alone
/// with its usage and subcommands, whole (one line would hold only its title; exit 2);
/// `--help` and `--version` as asked (exit 0).
fn refused(e: &clap::Error) -> ExitCode {
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        ExitCode::from(2)
    } else if e.use_stderr() {
        eprintln!("{}", one_line(&e.to_string()));
        ExitCode::from(2)
    } else {
        let _ = e.print();
        ExitCode::SUCCESS
    }
}

/// clap's refusal on one line: its first paragraph (the first line, and the names of missing
/// arguments clap lists under it), without the hints after it.
fn one_line(refusal: &str) -> String {
    let mut lines = refusal.lines().take_while(|line| !line.trim().is_empty());
    let first = lines.next().unwrap_or("invalid configuration");
    let listed: Vec<&str> = lines.map(str::trim).collect();
    if listed.is_empty() {
        first.to_owned()
    } else {
        format!("{first} {}", listed.join(", "))
    }
}

/// `principal add`: mint, append, print the token once; `principal remove`. What was done goes
/// to stderr, the token alone to stdout (for `TOKEN=$(…)`).
fn run_command(command: &Command) -> ExitCode {
    let Command::Principal(command) = command;
    let done = match command {
        PrincipalCommand::Add {
            file,
            name,
            kind,
            roles,
        } => {
            let roles = roles.iter().copied().collect();
            match principals::add(file, name, *kind, &roles) {
                Ok(token) => {
                    // Standard output closed (a pipe whose reader is gone): the principal is
                    // in the file with a token nobody saw; `println!` would panic.
                    if writeln!(std::io::stdout(), "{token}").is_err() {
                        eprintln!(
                            "error: added principal '{name}' to {}, but its token could not be \
                             written to standard output: remove the principal and add it again",
                            file.display()
                        );
                        return ExitCode::FAILURE;
                    }
                    Ok(format!(
                        "added principal '{name}' to {}; its token (on standard output) is \
                         shown only now: keep it. A running server reads the file on SIGHUP.",
                        file.display()
                    ))
                }
                Err(e) => Err(e),
            }
        }
        PrincipalCommand::Remove { file, name } => principals::remove(file, name).map(|()| {
            format!(
                "removed principal '{name}' from {}. A running server stops accepting its \
                 token on SIGHUP.",
                file.display()
            )
        }),
    };
    match done {
        Ok(said) => {
            eprintln!("{said}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), orchestrator_server::StartupError> {
    // SIGINT and SIGTERM, and SIGHUP (which re-reads the principals file), are listened for
    // from the first line: a signal nobody listens for ends the process at once (or, sent to
    // a container's PID 1, is ignored until the runtime kills it), and one sent while the
    // store opens (migrations, or waiting for another replica's) must not.
    let mut stop = Stop::listen();
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let start = async {
        if let Some(file) = &config.principals_file {
            // A bad principals file stops start-up before a database file is made or claimed.
            principals::Principals::load(file)?;
        }
        // A SQLite file is this process's alone: a second server started on it by mistake
        // stops here, before it opens the store, where start-up ends the asks it finds under
        // way as a crash's leftovers.
        let database = orchestrator_server::claim_database(&config.database_url)?;
        let app = build_app(&config).await?;
        let listener = bind(&config).await?;
        Ok::<_, orchestrator_server::StartupError>((database, app, listener))
    };
    // Stopped during start-up: nothing was served, and the process ends now, whatever step
    // was under way (a migration on a thread of its own, which the runtime would wait for,
    // is rolled back by the database, as after a crash).
    let (database, app, listener) = tokio::select! {
        started = start => started?,
        () = stop.next() => {
            tracing::info!("stopped during start-up");
            telemetry::flush(LOG_FLUSH);
            std::process::exit(0);
        }
    };
    #[cfg(unix)]
    if let Some(mut hangups) = hangups {
        // A bad file keeps the one in force.
        let app = app.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                app.reload_principals();
            }
        });
    }
    let address = listener
        .local_addr()
        .map_or_else(|_| config.bind_address().to_string(), |a| a.to_string());
    tracing::info!(
        address = %address,
        database = %config.database_url,
        version = orchestrator_server::VERSION,
        "listening"
    );
    let shutdown = async move {
        stop.next().await;
        let first = std::time::Instant::now();
        // A second signal while the server drains: the operator will not wait. One within a
        // second of the first is the same stop (Ctrl-C reaches a whole process group, and a
        // wrapper may pass on a SIGTERM too).
        tokio::spawn(async move {
            loop {
                stop.next().await;
                if first.elapsed() >= std::time::Duration::from_secs(1) {
                    break;
                }
            }
            tracing::warn!("a second stop signal: exiting without finishing the stop");
            telemetry::flush(LOG_FLUSH);
            std::process::exit(130);
        });
    };
    serve(listener, app, shutdown).await;
    tracing::info!("stopped");
    // The claim on a SQLite file is let go by the process's end, not here: closing any
    // descriptor of the database file releases every POSIX lock the process holds on it,
    // those of SQLite's connections included, and a reading task may hold one until the
    // runtime shuts down.
    std::mem::forget(database);
    Ok(())
}

/// SIGINT and SIGTERM, listened for from when it is made.
struct Stop {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Stop {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Stop {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Stop {}
    }

    /// Completes at the next SIGINT or SIGTERM (one that came since the last is not lost).
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn one(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = one(&mut self.interrupt) => {},
                () = one(&mut self.terminate) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

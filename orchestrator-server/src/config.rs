//! `Config`: every setting, from flags or the environment (README, "Configuration"). Parsed only in `main`
//! and passed down by value; no other module reads the environment.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use orchestrator_core::webhook::RetrySchedule;
use orchestrator_core::{Actor, ActorKind, Role};

use crate::http::hosts::AllowedHosts;
use crate::storage::DatabaseUrl;

/// The orchestrator service's settings.
#[derive(Clone, Parser)]
#[command(
    name = "orchestrator-server",
    version,
    about = "The feature-delivery orchestrator's HTTP service"
)]
pub struct Config {
    /// Listening address.
    #[arg(long, env = "HOST", value_name = "HOST", default_value = "0.0.0.0", value_parser = ip_address)]
    pub host: IpAddr,

    /// Listening port (0–65535; 0 picks a free one).
    #[arg(long, env = "PORT", value_name = "PORT", default_value_t = 8000)]
    pub port: u16,

    /// Where workflows are stored: sqlite:///relative, sqlite:////absolute, sqlite::memory:,
    /// or postgres://…. Never printed (it may hold a password): `--help` shows no value set in
    /// the environment, and a refusal does not repeat it.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        default_value = "sqlite:///./data/orchestrator.db",
        hide_env_values = true,
        value_parser = DATABASE_URL
    )]
    pub database_url: DatabaseUrl,

    /// Connections kept for reads (SQLite) or for everything (PostgreSQL) (1–1024).
    #[arg(long, env = "DATABASE_POOL_SIZE", value_name = "DATABASE_POOL_SIZE", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub database_pool_size: u32,

    /// Agent Hub base URL.
    #[arg(long, env = "AGENT_HUB_URL", value_name = "AGENT_HUB_URL", default_value = "http://localhost:8001",
          hide_env_values = true, value_parser = AGENT_HUB_URL)]
    pub agent_hub_url: String,

    /// Longest a question to the Agent Hub may take, in seconds (the hub gives its experts
    /// 300 s); its other calls give up after this or 30 s, whichever is shorter (1–3600).
    #[arg(long, env = "AGENT_HUB_TIMEOUT_SECONDS", value_name = "AGENT_HUB_TIMEOUT_SECONDS", default_value_t = 330,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub agent_hub_timeout_seconds: u64,

    /// How long a consultation request waits for the hub's answer before answering 202 and
    /// finishing in the background, in seconds (the smaller of this and the hub timeout;
    /// 0–3600, 0 answers 202 at once).
    #[arg(long, env = "AGENT_HUB_WAIT_SECONDS", value_name = "AGENT_HUB_WAIT_SECONDS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub agent_hub_wait_seconds: u64,

    /// Most consultations being asked at once (waited for or in the background); past it a
    /// new one is refused with 503 before anything is stored (1–100000).
    #[arg(long, env = "AGENT_HUB_MAX_ASKS", value_name = "AGENT_HUB_MAX_ASKS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub agent_hub_max_asks: u32,

    /// Most connections served at once; more wait in the listen backlog until one closes
    /// (1–100000).
    #[arg(long, env = "MAX_CONNECTIONS", value_name = "MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_connections: u32,

    /// Longest a request may take from its headers to its answer, in seconds (at least the
    /// consultation wait plus one short hub call plus 5 s is used, so a consultation is never
    /// cut short; a request that makes several hub calls may be) (1–3600).
    #[arg(long, env = "REQUEST_TIMEOUT_SECONDS", value_name = "REQUEST_TIMEOUT_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_seconds: u64,

    /// Longest a client may take to send a request's body, in seconds (then 408); at most a
    /// second less than the request bound used (1–3600).
    #[arg(long, env = "BODY_TIMEOUT_SECONDS", value_name = "BODY_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout_seconds: u64,

    /// Longest an answer may wait for a client that does not read it, in seconds (then the
    /// connection is closed) (1–3600).
    #[arg(long, env = "WRITE_TIMEOUT_SECONDS", value_name = "WRITE_TIMEOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub write_timeout_seconds: u64,

    /// Bearer token every non-public endpoint requires; unset means open. An empty one is
    /// refused (a variable meant to hold a token, left empty, must not open the server), and
    /// so is one no `Authorization` header can carry.
    #[arg(
        long,
        env = "ORCHESTRATOR_API_TOKEN",
        value_name = "ORCHESTRATOR_API_TOKEN",
        hide_env_values = true,
        value_parser = API_TOKEN
    )]
    pub api_token: Option<Secret>,

    /// Without a token or principals: host names requests may be addressed to besides IP
    /// addresses, `localhost` and names under `.localhost`, separated by commas, or `*` for
    /// any (a defence against web pages that point a name of their own at this server).
    #[arg(long, env = "ALLOWED_HOSTS", value_name = "ALLOWED_HOSTS",
          value_parser = AllowedHosts::parse)]
    pub allowed_hosts: Option<AllowedHosts>,

    /// Distinct approvals a workflow's gate needs when its start names none (1–10).
    #[arg(long, env = "GATE_REQUIRED_APPROVALS", value_name = "GATE_REQUIRED_APPROVALS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=10))]
    pub gate_required_approvals: u8,

    /// Seconds a stay at the gate may last before it is overdue, when a workflow's start
    /// names none (1–31536000); unset: no deadline.
    #[arg(long, env = "GATE_DUE_SECONDS", value_name = "GATE_DUE_SECONDS",
          value_parser = clap::value_parser!(u32).range(1..=31_536_000))]
    pub gate_due_seconds: Option<u32>,

    /// Seconds events are kept before retention deletes them (60–31536000).
    #[arg(long, env = "EVENTS_RETENTION_SECONDS", value_name = "EVENTS_RETENTION_SECONDS", default_value_t = 604_800,
          value_parser = clap::value_parser!(u64).range(60..=31_536_000))]
    pub events_retention_seconds: u64,

    /// Seconds between heartbeat comments on a quiet event stream (1–3600).
    #[arg(long, env = "EVENTS_HEARTBEAT_SECONDS", value_name = "EVENTS_HEARTBEAT_SECONDS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub events_heartbeat_seconds: u64,

    /// The delays between a webhook delivery's attempts, e.g. `1s,2s,4s` (units s, m, h, d;
    /// each 1 s to 7 d); when they are used up the delivery has failed.
    #[arg(long, env = "WEBHOOK_RETRY_SCHEDULE", value_name = "WEBHOOK_RETRY_SCHEDULE",
          default_value = "5s,5m,30m,2h,5h,10h,10h", value_parser = parse_retry_schedule)]
    pub webhook_retry_schedule: RetrySchedule,

    /// Whether webhooks may target loopback, private and link-local addresses (`true` or
    /// `false`).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE_NETWORKS", value_name = "WEBHOOK_ALLOW_PRIVATE_NETWORKS",
          default_value_t = false, action = clap::ArgAction::Set, value_parser = parse_bool)]
    pub webhook_allow_private_networks: bool,

    /// Principals mode: a TOML file of principals (name, kind, roles, SHA-256 of their
    /// token), re-read on SIGHUP. Not together with ORCHESTRATOR_API_TOKEN.
    #[arg(
        long,
        env = "ORCHESTRATOR_PRINCIPALS_FILE",
        value_name = "ORCHESTRATOR_PRINCIPALS_FILE",
        conflicts_with = "api_token"
    )]
    pub principals_file: Option<PathBuf>,

    /// A task other than serving.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Tracing filter, e.g. `info` or `orchestrator_server=debug`.
    #[arg(
        long = "log",
        env = "RUST_LOG",
        value_name = "RUST_LOG",
        default_value = "info",
        value_parser = parse_log_filter
    )]
    pub log: String,

    /// Log line format.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_name = "LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
}

/// A task of the binary other than serving, parsed alone: a task reads no server setting, so
/// one the environment holds for the server (a `PORT` the shell exports, a token beside a
/// principals file) does not stop it.
#[derive(Debug, Clone, Parser)]
#[command(name = "orchestrator-server")]
pub struct Task {
    /// The task.
    #[command(subcommand)]
    pub command: Command,
}

impl Task {
    /// Whether `first`, the first argument, names a task rather than a server setting.
    pub fn named_by(first: Option<&std::ffi::OsStr>) -> bool {
        first.is_some_and(|first| first == "principal")
    }
}

/// What the binary does besides serving.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Manage the principals file.
    #[command(subcommand)]
    Principal(PrincipalCommand),
}

/// `orchestrator-server principal …`.
#[derive(Debug, Clone, Subcommand)]
pub enum PrincipalCommand {
    /// Mint a token for a new principal: prints it once and appends the principal, with the
    /// token's SHA-256 only, to the file (created if missing). A running server reads it on
    /// SIGHUP.
    #[command(
        after_help = "Example:\n  orchestrator-server principal add --file principals.toml \\\n    --name alice --kind human --role reviewer"
    )]
    Add {
        /// The principals file.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// The principal's name, recorded as the actor of what it does (1–128 characters; not
        /// `system`, the orchestrator's own).
        #[arg(long, value_parser = crate::principals::principal_name)]
        name: Actor,
        /// human or agent.
        #[arg(long, value_parser = parse_kind)]
        kind: ActorKind,
        /// viewer, agent, reviewer or admin; repeat for several.
        #[arg(long = "role", required = true, value_parser = |v: &str| v.parse::<Role>().map_err(|e| e.to_string()))]
        roles: Vec<Role>,
    },
    /// Remove a principal from the file (the rest of it stays as written): its token stops
    /// working once a running server reads the file again (SIGHUP). To replace a token,
    /// remove the principal and add it again.
    #[command(
        after_help = "Example:\n  orchestrator-server principal remove --file principals.toml --name alice"
    )]
    Remove {
        /// The principals file.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// The principal's name.
        #[arg(long, value_parser = crate::principals::principal_name)]
        name: Actor,
    },
}

fn parse_kind(value: &str) -> Result<ActorKind, String> {
    match value.parse::<ActorKind>() {
        Ok(kind @ (ActorKind::Human | ActorKind::Agent)) => Ok(kind),
        _ => Err("must be human or agent".to_owned()),
    }
}

/// A value that must never be printed: its `Debug` says `<redacted>`, it has no `Display`,
/// and reading it takes an explicit [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// How long the Agent Hub lets one of its experts answer, in seconds: a question may take
/// that long and still be answered.
pub const HUB_EXPERT_SECONDS: u64 = 300;

/// The length under which start-up warns that a shared token may be guessed (32 characters:
/// 16 random bytes as hex, or a principal's minted token, are past it).
pub const GUESSABLE_TOKEN_LEN: usize = 32;

impl Secret {
    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for machines.
    Json,
    /// Human-readable, multi-line.
    Pretty,
}

impl Config {
    /// The settings a test or an example starts from: port 0 on loopback, the given database,
    /// a pool of 4, no token, a hub nobody listens on (`127.0.0.1:9`) with a 5 s timeout,
    /// webhooks allowed to reach private addresses (a receiver on this machine), warnings
    /// only, logged for a person. Not for a service: start it from the parsed configuration,
    /// whose defaults refuse private addresses.
    pub fn for_tests(database_url: DatabaseUrl) -> Self {
        Config {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            database_url,
            database_pool_size: 4,
            agent_hub_url: "http://127.0.0.1:9".to_owned(),
            agent_hub_timeout_seconds: 5,
            agent_hub_wait_seconds: 20,
            agent_hub_max_asks: 64,
            max_connections: 1024,
            request_timeout_seconds: 60,
            body_timeout_seconds: 10,
            write_timeout_seconds: 30,
            api_token: None,
            allowed_hosts: None,
            principals_file: None,
            gate_required_approvals: 1,
            gate_due_seconds: None,
            events_retention_seconds: 604_800,
            events_heartbeat_seconds: 15,
            webhook_retry_schedule: RetrySchedule::default(),
            webhook_allow_private_networks: true,
            command: None,
            log: "warn".to_owned(),
            log_format: LogFormat::Pretty,
        }
    }

    /// Longest a question to the Agent Hub may take.
    pub fn hub_ask_timeout(&self) -> Duration {
        Duration::from_secs(self.agent_hub_timeout_seconds)
    }

    /// Longest any other Agent Hub call may take: the ask timeout, at most 30 s.
    pub fn hub_call_timeout(&self) -> Duration {
        self.hub_ask_timeout().min(Duration::from_secs(30))
    }

    /// The request bound actually used, when it is longer than `REQUEST_TIMEOUT_SECONDS`
    /// says: raised to the consultation wait (or the ask timeout) + one hub call + 5 s, so a
    /// consultation is never cut short. Start-up logs it.
    pub fn request_timeout_raised(&self) -> Option<Duration> {
        Some(self.limits().request_timeout)
            .filter(|used| *used > Duration::from_secs(self.request_timeout_seconds))
    }

    /// The body bound actually used, when it is shorter than `BODY_TIMEOUT_SECONDS` says:
    /// lowered to a second less than the request bound, so a stalled body is 408 before the
    /// request's own bound makes it a 503. Start-up warns.
    pub fn body_timeout_lowered(&self) -> Option<Duration> {
        Some(self.limits().body_timeout)
            .filter(|used| *used < Duration::from_secs(self.body_timeout_seconds))
    }

    /// Whether `ORCHESTRATOR_API_TOKEN` is shorter than [`GUESSABLE_TOKEN_LEN`]: the server
    /// does not slow down failed attempts, so a short token may be guessed. Start-up warns.
    pub fn api_token_guessable(&self) -> bool {
        self.api_token
            .as_ref()
            .is_some_and(|token| token.expose().len() < GUESSABLE_TOKEN_LEN)
    }

    /// Whether the server answers anyone who reaches it: no token, no principals, and an
    /// address other than loopback. Every caller then holds every right (overriding a gate,
    /// registering webhooks), so start-up warns.
    pub fn open_to_the_network(&self) -> bool {
        self.api_token.is_none()
            && self.principals_file.is_none()
            && !self.host.to_canonical().is_loopback()
    }

    /// Whether `ALLOWED_HOSTS` is set beside a token or principals, which answer every name
    /// (the names matter only to an open server). Start-up warns.
    pub fn allowed_hosts_ignored(&self) -> bool {
        self.allowed_hosts.is_some() && (self.api_token.is_some() || self.principals_file.is_some())
    }

    /// Whether `AGENT_HUB_TIMEOUT_SECONDS` gives up on a question before the hub gives up on
    /// its expert ([`HUB_EXPERT_SECONDS`]): a slow expert's answer, or its escalation, then
    /// lands at the hub after the orchestrator stopped waiting, and is never learnt of; and
    /// asking again puts the question in the hub's session twice. Start-up warns.
    pub fn hub_timeout_below_experts(&self) -> bool {
        self.agent_hub_timeout_seconds < HUB_EXPERT_SECONDS
    }

    /// The webhook retry schedule's length, when it is longer than `EVENTS_RETENTION_SECONDS`:
    /// a delivery that fails for good is then deleted (with its event) as soon as it does,
    /// before it can be listed and redelivered. Start-up warns.
    pub fn retries_outlast_retention(&self) -> Option<Duration> {
        let schedule: Duration = self.webhook_retry_schedule.delays().iter().sum();
        Some(schedule).filter(|s| *s > Duration::from_secs(self.events_retention_seconds))
    }

    /// The time bounds and connection limit the HTTP layer enforces.
    pub fn limits(&self) -> crate::http::Limits {
        // A wait as long as the hub timeout would only race it: then the request waits for
        // the ask to end, whichever way.
        let wait = Some(Duration::from_secs(self.agent_hub_wait_seconds))
            .filter(|wait| *wait < self.hub_ask_timeout());
        let call = self.hub_call_timeout();
        // The longest one ask may take in all: opening (or renewing) a session, and asking.
        let bound = call + self.hub_ask_timeout();
        let request_timeout = Duration::from_secs(self.request_timeout_seconds)
            .max(wait.unwrap_or(self.hub_ask_timeout()) + call + Duration::from_secs(5));
        crate::http::Limits {
            max_connections: usize::try_from(self.max_connections).unwrap_or(1024),
            request_timeout,
            // A body that stalls is 408 before the request's own bound makes it a 503.
            body_timeout: Duration::from_secs(self.body_timeout_seconds)
                .min(request_timeout.saturating_sub(Duration::from_secs(1))),
            write_timeout: Duration::from_secs(self.write_timeout_seconds),
            asks: crate::http::AskPolicy {
                wait,
                max_in_flight: usize::try_from(self.agent_hub_max_asks).unwrap_or(64),
                bound,
                // The bound, and a minute's margin: no live ask is older.
                abandoned_after: bound + Duration::from_secs(60),
            },
            events: crate::http::events::EventPolicy {
                retention: Duration::from_secs(self.events_retention_seconds),
                heartbeat: Duration::from_secs(self.events_heartbeat_seconds),
            },
            drain_timeout: crate::http::DRAIN_TIMEOUT,
        }
    }

    /// How webhooks are sent.
    pub fn webhook_policy(&self) -> crate::http::webhooks::WebhookPolicy {
        crate::http::webhooks::WebhookPolicy {
            schedule: self.webhook_retry_schedule.clone(),
            allow_private_networks: self.webhook_allow_private_networks,
        }
    }

    /// The socket address to listen on.
    pub fn bind_address(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database_url", &self.database_url.to_string())
            .field("database_pool_size", &self.database_pool_size)
            .field("agent_hub_url", &self.agent_hub_url)
            .field("agent_hub_timeout_seconds", &self.agent_hub_timeout_seconds)
            .field("agent_hub_wait_seconds", &self.agent_hub_wait_seconds)
            .field("agent_hub_max_asks", &self.agent_hub_max_asks)
            .field("gate_required_approvals", &self.gate_required_approvals)
            .field("gate_due_seconds", &self.gate_due_seconds)
            .field("events_retention_seconds", &self.events_retention_seconds)
            .field("events_heartbeat_seconds", &self.events_heartbeat_seconds)
            .field(
                "webhook_retry_schedule",
                &self.webhook_retry_schedule.to_string(),
            )
            .field(
                "webhook_allow_private_networks",
                &self.webhook_allow_private_networks,
            )
            .field("max_connections", &self.max_connections)
            .field("request_timeout_seconds", &self.request_timeout_seconds)
            .field("body_timeout_seconds", &self.body_timeout_seconds)
            .field("write_timeout_seconds", &self.write_timeout_seconds)
            .field("api_token", &self.api_token)
            .field("log", &self.log)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// A tracing filter in `RUST_LOG`'s syntax; a bad one stops start-up like every bad setting.
/// A bare word is a target at `trace` to the filter, which switches every other target off:
/// one that looks meant as a level (`warning`, `verbose`) is refused rather than silencing
/// the log.
fn parse_log_filter(value: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    const NOT_LEVELS: [&str; 8] = [
        "verbose", "fatal", "critical", "all", "none", "notice", "quiet", "silent",
    ];
    // An empty filter enables nothing: a server without a line of log, not even its errors
    // (`RUST_LOG: ${RUST_LOG}` in a compose file with the variable unset).
    if value
        .split(',')
        .all(|directive| directive.trim().is_empty())
    {
        return Err(
            "names no level or target: set a level (info, say) or leave it unset".to_owned(),
        );
    }
    for directive in value.split(',').map(str::trim) {
        let word = directive.to_ascii_lowercase();
        let bare = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphabetic());
        let meant_as_level = NOT_LEVELS.contains(&word.as_str())
            || LEVELS.iter().any(|level| word.starts_with(&level[..3]));
        if bare && meant_as_level && !LEVELS.contains(&word.as_str()) {
            return Err(format!(
                "'{directive}' is not a level (off, error, warn, info, debug, trace); a target is written target=level"
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(value)
        .map(|_| value.to_owned())
        .map_err(|e| e.to_string())
}

/// An address to listen on, told plainly when it is a name (`localhost` is one).
fn ip_address(value: &str) -> Result<IpAddr, String> {
    value.parse().map_err(|_| {
        "must be an IP address, not a host name: 127.0.0.1 (this machine only), 0.0.0.0 (every \
         address), ::1 or ::"
            .to_owned()
    })
}

fn parse_retry_schedule(value: &str) -> Result<RetrySchedule, String> {
    RetrySchedule::parse(value).map_err(|e| e.rule)
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("must be true or false".to_owned()),
    }
}

/// A setting whose value a refusal never repeats (clap's own message would quote it: a
/// password in a URL, a token): it names the setting and says why, and `note` after that.
#[derive(Clone)]
struct Unrepeated<T> {
    /// `NAME (--flag)`, which the refusal opens with.
    setting: &'static str,
    /// What the refusal ends with.
    note: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

/// Where a refusal of a setting that may hold a password says why it is not shown.
const MAY_HOLD_A_PASSWORD: &str = " (the value is not repeated: it may hold a password)";

impl<T: Clone + Send + Sync + 'static> clap::builder::TypedValueParser for Unrepeated<T> {
    type Value = T;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let refused = |rule: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("{} {rule}{}\n", self.setting, self.note),
            )
        };
        let value = value
            .to_str()
            .ok_or_else(|| refused("must be text in UTF-8".to_owned()))?;
        (self.parse)(value).map_err(refused)
    }
}

/// `DATABASE_URL`, never repeated.
const DATABASE_URL: Unrepeated<DatabaseUrl> = Unrepeated {
    setting: "DATABASE_URL (--database-url)",
    note: MAY_HOLD_A_PASSWORD,
    parse: parse_database_url,
};

/// `AGENT_HUB_URL`, never repeated.
const AGENT_HUB_URL: Unrepeated<String> = Unrepeated {
    setting: "AGENT_HUB_URL (--agent-hub-url)",
    note: MAY_HOLD_A_PASSWORD,
    parse: parse_hub_url,
};

/// `ORCHESTRATOR_API_TOKEN`, a secret, never repeated.
const API_TOKEN: Unrepeated<Secret> = Unrepeated {
    setting: "ORCHESTRATOR_API_TOKEN (--api-token)",
    note: "",
    parse: parse_api_token,
};

fn parse_database_url(value: &str) -> Result<DatabaseUrl, String> {
    value.parse::<DatabaseUrl>().map_err(|bad| {
        format!(
            "is not one this server reads{}: expected sqlite:///relative, sqlite:////absolute, sqlite::memory: or postgres://…",
            bad.rule()
        )
    })
}

/// The longest shared token: the board's sign-in form (8 KiB at most) must carry it, even
/// with every character percent-encoded.
const MAX_TOKEN_LEN: usize = 1024;

/// A shared token: not empty, and what a header can carry (printable ASCII, nothing around
/// it, so a secret read from a file with its line feed is caught here).
fn parse_api_token(value: &str) -> Result<Secret, String> {
    if value.is_empty() {
        return Err("must not be empty (leave it unset for a server without a token)".to_owned());
    }
    if value.trim() != value || !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(
            "must be printable ASCII, with no white space around it (a header carries it)"
                .to_owned(),
        );
    }
    if value.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "must be at most {MAX_TOKEN_LEN} characters (the board's sign-in form carries it)"
        ));
    }
    Ok(Secret::from(value))
}

/// The hub's base URL, to which each call's path is appended.
fn parse_hub_url(value: &str) -> Result<String, String> {
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        return Err("must start with http:// or https://".to_owned());
    }
    if value.trim() != value {
        return Err("must have no white space around it".to_owned());
    }
    // The URL standard's reading, as the client's: a port past 65535, a space in the host or
    // no host at all is refused here rather than at every call.
    let url = reqwest::Url::parse(value).map_err(|e| format!("is not a valid URL: {e}"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".to_owned());
    }
    // The hub's contract has no credentials, and reqwest would send these as Basic auth.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must carry no user name or password: the orchestrator sends the hub no credentials (a proxy in front of the hub may add them)"
                .to_owned(),
        );
    }
    // Each call's path goes after the base: behind a query or a fragment it would be no path.
    if url.query().is_some() || url.fragment().is_some() {
        return Err(
            "must have no query (?…) or fragment (#…): each call's path is added to it".to_owned(),
        );
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("orchestrator-server").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.bind_address().to_string(), "0.0.0.0:8000");
        assert_eq!(
            config.database_url,
            DatabaseUrl::SqliteFile(PathBuf::from("./data/orchestrator.db"))
        );
        assert_eq!(config.agent_hub_url, "http://localhost:8001");
        assert_eq!(config.agent_hub_timeout_seconds, 330);
        assert_eq!(config.agent_hub_wait_seconds, 20);
        let limits = config.limits();
        assert_eq!(limits.asks.wait, Some(Duration::from_secs(20)));
        // The wait, one short hub call (30 s) and 5 s: a consultation is never cut short.
        assert_eq!(limits.request_timeout, Duration::from_secs(60));
        assert_eq!(config.hub_call_timeout(), Duration::from_secs(30));
        assert_eq!(limits.body_timeout, Duration::from_secs(10));
        // A body that stalls is 408 before the request's bound makes it a 503.
        let lenient = parse(&["--body-timeout-seconds", "120"]).unwrap();
        assert_eq!(lenient.limits().body_timeout, Duration::from_secs(59));
        // Start-up warns of the lowering, not of the default.
        assert_eq!(
            lenient.body_timeout_lowered(),
            Some(Duration::from_secs(59))
        );
        assert_eq!(config.body_timeout_lowered(), None);
        assert_eq!(
            parse(&["--body-timeout-seconds", "59"])
                .unwrap()
                .body_timeout_lowered(),
            None
        );
        // A wait as long as the hub timeout is no wait at all: the request sees the end.
        let patient = parse(&["--agent-hub-timeout-seconds", "10"]).unwrap();
        assert_eq!(patient.limits().asks.wait, None);
        assert_eq!(patient.limits().request_timeout, Duration::from_secs(60));
        let slow = parse(&["--agent-hub-wait-seconds", "100"]).unwrap();
        assert_eq!(slow.limits().request_timeout, Duration::from_secs(135));
        assert_eq!(config.request_timeout_raised(), None);
        assert_eq!(
            slow.request_timeout_raised(),
            Some(Duration::from_secs(135))
        );
        // The default schedule (about 27½ h) fits the default week of retention.
        assert_eq!(config.retries_outlast_retention(), None);
        let brief = parse(&["--events-retention-seconds", "3600"]).unwrap();
        assert_eq!(
            brief.retries_outlast_retention(),
            Some(Duration::from_secs(99_305))
        );
        let hasty = parse(&["--request-timeout-seconds", "2"]).unwrap();
        assert_eq!(
            hasty.request_timeout_raised(),
            Some(Duration::from_secs(55))
        );
        assert_eq!(config.api_token, None);
        // A hub URL as the client reads it, without a trailing slash.
        let hub = parse(&["--agent-hub-url", "http://Hub.example:8001/v1/"]).unwrap();
        assert_eq!(hub.agent_hub_url, "http://hub.example:8001/v1");
        let with_token = parse(&["--api-token", "s3cret"]).unwrap();
        assert!(!format!("{with_token:?}").contains("s3cret"));
        // Nor does a database URL's password show, in the config or the URL alone.
        let with_password = parse(&["--database-url", "postgres://me:s3cret@db/o"]).unwrap();
        assert!(!format!("{with_password:?}").contains("s3cret"));
        assert!(!format!("{:?}", with_password.database_url).contains("s3cret"));
        assert!(!with_password.database_url.to_string().contains("s3cret"));
        // Start-up warns of a hub timeout shorter than the hub's experts may take.
        assert!(!config.hub_timeout_below_experts());
        assert!(
            !parse(&["--agent-hub-timeout-seconds", "300"])
                .unwrap()
                .hub_timeout_below_experts()
        );
        assert!(
            parse(&["--agent-hub-timeout-seconds", "299"])
                .unwrap()
                .hub_timeout_below_experts()
        );
        // Start-up warns of a token short enough to guess, not of a random one or none.
        assert!(with_token.api_token_guessable());
        let random = parse(&["--api-token", &"7f".repeat(16)]).unwrap();
        assert!(!random.api_token_guessable());
        assert!(!config.api_token_guessable());
        // Start-up warns of an open server on every address, not on loopback or with a token.
        assert!(config.open_to_the_network());
        assert!(!with_token.open_to_the_network());
        assert!(
            !parse(&["--host", "127.0.0.1"])
                .unwrap()
                .open_to_the_network()
        );
        assert!(!parse(&["--host", "::1"]).unwrap().open_to_the_network());
        // And of ALLOWED_HOSTS beside a token, which answers every name.
        let named = parse(&["--allowed-hosts", "orchestrator"]).unwrap();
        assert!(!named.allowed_hosts_ignored());
        assert_eq!(
            named.allowed_hosts,
            Some(AllowedHosts::parse("orchestrator").unwrap())
        );
        assert!(
            parse(&["--allowed-hosts", "orchestrator", "--api-token", "s3cret"])
                .unwrap()
                .allowed_hosts_ignored()
        );
        assert!(parse(&["--allowed-hosts", "orchestrator:8000"]).is_err());
        assert_eq!(
            with_token
                .api_token
                .map(|t| t.expose().to_owned())
                .as_deref(),
            Some("s3cret")
        );
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn every_database_url_form_is_understood() {
        for (url, expected) in [
            (
                "sqlite:///data/x.db",
                DatabaseUrl::SqliteFile(PathBuf::from("data/x.db")),
            ),
            (
                "sqlite:////var/lib/x.db",
                DatabaseUrl::SqliteFile(PathBuf::from("/var/lib/x.db")),
            ),
            (
                "sqlite:x.db",
                DatabaseUrl::SqliteFile(PathBuf::from("x.db")),
            ),
            ("sqlite::memory:", DatabaseUrl::SqliteMemory),
            (
                "postgres://u@h/db",
                DatabaseUrl::Postgres("postgres://u@h/db".into()),
            ),
            (
                "postgresql://u@h/db",
                DatabaseUrl::Postgres("postgresql://u@h/db".into()),
            ),
        ] {
            assert_eq!(url.parse::<DatabaseUrl>(), Ok(expected), "{url}");
        }
        for bad in [
            "mysql://x",
            "sqlite:",
            "sqlite:///",
            "data.db",
            "sqlite:///x.db?mode=ro",
            "sqlite:///x.db\n",
            " sqlite:///x.db",
        ] {
            assert!(bad.parse::<DatabaseUrl>().is_err(), "{bad}");
        }
        // A refusal never shows a URL that may hold a password, wherever the space is.
        for url in ["postgres://u:s3cret@h/db \n", " postgres://u:s3cret@h/db"] {
            let shown = url.parse::<DatabaseUrl>().unwrap_err().to_string();
            assert!(
                !shown.contains("s3cret") && shown.contains("line end"),
                "{shown}"
            );
        }
    }

    #[test]
    fn a_word_meant_as_a_level_is_refused_not_read_as_a_target() {
        for bad in ["warning", "Verbose", "info,debugging", "critical", "errors"] {
            assert!(parse_log_filter(bad).is_err(), "{bad}");
        }
        for good in [
            "info",
            "WARN",
            "hyper",
            "orchestrator_server=debug,warn",
            "off",
        ] {
            assert!(parse_log_filter(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_bad_value_names_the_variable_in_one_line() {
        for (args, name) in [
            (&["--port", "eighty"][..], "PORT"),
            (&["--database-url", "mysql://x"][..], "DATABASE_URL"),
            (
                &["--agent-hub-timeout-seconds", "0"][..],
                "AGENT_HUB_TIMEOUT_SECONDS",
            ),
            (&["--agent-hub-url", "localhost:8001"][..], "AGENT_HUB_URL"),
            (
                &["--agent-hub-url", "http://hub:99999"][..],
                "AGENT_HUB_URL",
            ),
            (&["--agent-hub-url", "http://:8001"][..], "AGENT_HUB_URL"),
            (&["--agent-hub-url", "http://exa mple"][..], "AGENT_HUB_URL"),
            (
                &["--agent-hub-url", "http://hub:8001 "][..],
                "AGENT_HUB_URL",
            ),
            (&["--api-token", ""][..], "ORCHESTRATOR_API_TOKEN"),
            (&["--api-token", "s3cret\n"][..], "ORCHESTRATOR_API_TOKEN"),
            (&["--api-token", "s3crét"][..], "ORCHESTRATOR_API_TOKEN"),
            (&["--api-token", " s3cret"][..], "ORCHESTRATOR_API_TOKEN"),
            (
                &["--api-token", &"t".repeat(1025)][..],
                "ORCHESTRATOR_API_TOKEN",
            ),
            (&["--log-format", "xml"][..], "LOG_FORMAT"),
            (&["--log", "info,[=bogus"][..], "RUST_LOG"),
            (&["--log", ""][..], "RUST_LOG"),
            (&["--log", " , "][..], "RUST_LOG"),
        ] {
            let error = parse(args).unwrap_err().to_string();
            let first = error.lines().next().unwrap();
            assert!(first.contains(name), "{first}");
        }
        // A host name is told to be an address instead.
        let error = parse(&["--host", "localhost"]).unwrap_err().to_string();
        assert!(error.contains("HOST"), "{error}");
        assert!(error.contains("not a host name: 127.0.0.1"), "{error}");
        // A base URL that would keep the paths added to it out of the path.
        for base in [
            "http://hub:8001/?key=1",
            "http://hub:8001/#top",
            "http://hub:8001?",
        ] {
            let error = parse(&["--agent-hub-url", base]).unwrap_err().to_string();
            assert!(error.contains("no query (?…) or fragment (#…)"), "{error}");
        }
        // A URL may carry a password: it is refused, and not shown.
        for with_password in ["http://hub:s3cret@hub", "ftp://hub:s3cret@hub"] {
            let error = parse(&["--agent-hub-url", with_password])
                .unwrap_err()
                .to_string();
            assert!(!error.contains("s3cret"), "{error}");
        }
        let error = parse(&["--agent-hub-url", "http://hub:s3cret@hub"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("no user name or password"), "{error}");
        // A token is a secret: a refused one is not shown.
        let error = parse(&["--api-token", "s3cret\n"]).unwrap_err().to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }
}

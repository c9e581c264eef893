//! The `groupwatch` command line: parses arguments, loads configuration, hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use groupwatch::config::Config;
use groupwatch::telemetry::{self, LogFormat};

/// Self-hosted, replay-proof change events for Microsoft 365 groups.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log line format (stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGINT/SIGTERM.
    Run {
        /// Configuration file (TOML), layered over the built-in defaults and under GROUPWATCH__* variables.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the configuration and report every problem with its key.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Show cursors, membership counts per group and outbox depth (stop the daemon first).
    State {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Dead letters: events a sink gave up on (stop the daemon first).
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Sign a member account in for group calendars (device code); run it while the daemon is stopped.
    Login {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// The `[connections.NAME]` to sign in (it needs delegated_scopes).
        #[arg(long)]
        connection: String,
    },
    /// Watch a simulated tenant with live churn, replays and a token expiry. No flags, no credentials.
    Demo {
        /// Stop after this many seconds (for scripted runs); default: until Ctrl-C.
        #[arg(long, hide = true)]
        for_secs: Option<u64>,
    },
}

/// Selects dead letters; no selector means all of them.
#[derive(clap::Args)]
struct DlqSelect {
    /// Configuration file (TOML).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Only dead letters of this sink.
    #[arg(long)]
    sink: Option<String>,
    /// Only these CloudEvent ids (repeatable).
    #[arg(long = "id")]
    ids: Vec<String>,
}

impl DlqSelect {
    fn filter(&self) -> groupwatch::store::DlqFilter {
        groupwatch::store::DlqFilter {
            sink: self.sink.clone(),
            ids: self.ids.clone(),
        }
    }
}

#[derive(Subcommand)]
enum DlqAction {
    /// List dead letters: sink, event id and type, attempts, last error.
    List {
        #[command(flatten)]
        select: DlqSelect,
        /// One JSON object per line, the full event included.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back on their sink's outbox (same ids); re-enables a sink disabled by 410 Gone.
    Replay {
        #[command(flatten)]
        select: DlqSelect,
    },
    /// Delete dead letters. Without --sink or --id, --all is required.
    Purge {
        #[command(flatten)]
        select: DlqSelect,
        /// Confirms purging every dead letter.
        #[arg(long)]
        all: bool,
    },
}

fn dlq(action: DlqAction) -> ExitCode {
    let select = match &action {
        DlqAction::List { select, .. }
        | DlqAction::Replay { select }
        | DlqAction::Purge { select, .. } => select,
    };
    let cfg = match load(select.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let filter = select.filter();
    let res = match &action {
        DlqAction::List { json, .. } => groupwatch::dlq::list(&cfg, &filter, *json),
        DlqAction::Replay { .. } => groupwatch::dlq::replay(&cfg, &filter),
        DlqAction::Purge { all, .. } => {
            if filter.sink.is_none() && filter.ids.is_empty() && !all {
                eprintln!("groupwatch: purge needs --sink, --id or --all");
                return ExitCode::from(2);
            }
            groupwatch::dlq::purge(&cfg, &filter)
        }
    };
    match res {
        Ok(s) => {
            print!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => report(Err(e)),
    }
}

fn load(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("groupwatch: {e}");
        ExitCode::from(2)
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            telemetry::init(cli.log_format, "info");
            let cfg = match load(Some(&config)) {
                Ok(c) => c,
                Err(code) => return code,
            };
            report(groupwatch::app::run(cfg).await)
        }
        Command::CheckConfig { config } => match load(config.as_deref()) {
            Ok(cfg) => {
                println!(
                    "configuration is valid: {} connection(s), {} sink(s), {} subscription(s)",
                    cfg.connections.len(),
                    cfg.sinks.len(),
                    cfg.subscriptions.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::State { config } => {
            let cfg = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match groupwatch::app::state_report(&cfg) {
                Ok(s) => {
                    print!("{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => report(Err(e)),
            }
        }
        Command::Dlq { action } => dlq(action),
        Command::Login { config, connection } => {
            telemetry::init(cli.log_format, "warn");
            let cfg = match load(Some(&config)) {
                Ok(c) => c,
                Err(code) => return code,
            };
            report(groupwatch::login::login(&cfg, &connection, |m| println!("{m}")).await)
        }
        Command::Demo { for_secs } => {
            telemetry::init(cli.log_format, "warn");
            report(groupwatch::demo::run(for_secs.map(std::time::Duration::from_secs)).await)
        }
    }
}

fn report(res: anyhow::Result<()>) -> ExitCode {
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("groupwatch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

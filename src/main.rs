//! The `switchyard` command: parses the command line, sets up logging, loads
//! the config and hands over to the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use switchyard::{config, demo, Gateway};
use tracing_subscriber::EnvFilter;

/// jemalloc, with its background threads purging freed memory: after a
/// burst (slow readers, a connection flood) the process gives memory back
/// to the system within seconds, where glibc's arenas kept it
/// (docs/benchmarks.md, slow readers).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Progressive-delivery gateway: canary and blue/green traffic shifting with automatic rollback"
)]
struct Cli {
    /// Config file (for `run` when no subcommand is given).
    #[arg(short, long, global = true, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on stderr (default: text on a terminal, json otherwise).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a config file.
    Run,
    /// Validate a config file: exit 0 with a summary, or 1 with every error.
    Check,
    /// Run the built-in demo: two demo backends, a canary that steps up, fails
    /// and is rolled back, all on loopback. No file needed.
    Demo {
        /// Gateway listener address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin API and dashboard address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Run the story this many times faster (tests use 20 or more).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// Act on every replica of a fleet through their admin APIs.
    Ctl(CtlArgs),
}

#[derive(clap::Args)]
struct CtlArgs {
    /// A replica's admin API: http://HOST:PORT, HOST:PORT, or dns:NAME:PORT
    /// for every address of NAME (repeatable; or a comma-separated list in
    /// SWITCHYARD_ADMIN).
    #[arg(
        long = "admin",
        env = "SWITCHYARD_ADMIN",
        value_delimiter = ',',
        global = true
    )]
    admins: Vec<String>,
    /// A file holding the admin bearer token (else SWITCHYARD_ADMIN_TOKEN).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// How long to wait for each replica (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    timeout: std::time::Duration,
    /// Output: one line per replica, or one JSON document.
    #[arg(long, value_enum, default_value = "text", global = true)]
    output: CtlOutput,
    /// The DNS server for dns: replicas (IP:PORT; default the system's).
    #[arg(long, global = true)]
    resolver: Option<SocketAddr>,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Clone, Copy, ValueEnum)]
enum CtlOutput {
    Text,
    Json,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Each replica's phase, weights, step and window figures; flags
    /// replicas that disagree (exit 3).
    Status {
        /// Only this backend.
        backend: Option<String>,
    },
    /// Skip to 100 % canary on every replica.
    Promote { backend: String },
    /// Roll back now on every replica.
    Abort { backend: String },
    /// Hold the release on every replica.
    Pause { backend: String },
    /// Continue a paused release on every replica.
    Resume { backend: String },
    /// Restart a rolled-back release on every replica.
    Retry { backend: String },
    /// Reload the config file on every replica.
    Reload,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Demo {
        listen,
        admin,
        speed,
    } = command
    {
        init_logging(cli.log_format, "warn");
        let options = demo::Options {
            listen: Some(listen),
            admin: Some(admin),
            speed,
        };
        return match demo::run(options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("switchyard demo: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Ctl(args) = command {
        return ExitCode::from(ctl(args));
    }
    let Some(path) = cli.config.as_deref() else {
        eprintln!("switchyard: no config file: pass -c FILE or set SWITCHYARD_CONFIG (or try `switchyard demo`)");
        return ExitCode::from(2);
    };
    match command {
        Command::Check => check(path),
        Command::Run | Command::Demo { .. } | Command::Ctl(_) => {
            init_logging(cli.log_format, "info");
            run(path)
        }
    }
}

fn ctl(args: CtlArgs) -> u8 {
    use switchyard::ctl::{self, Command};
    let action = |name: &str, backend: String| Command::Action {
        action: name.to_string(),
        backend,
    };
    let command = match args.command {
        CtlCommand::Status { backend } => Command::Status { backend },
        CtlCommand::Promote { backend } => action("promote", backend),
        CtlCommand::Abort { backend } => action("abort", backend),
        CtlCommand::Pause { backend } => action("pause", backend),
        CtlCommand::Resume { backend } => action("resume", backend),
        CtlCommand::Retry { backend } => action("retry", backend),
        CtlCommand::Reload => Command::Reload,
    };
    let options = ctl::Options {
        admins: args.admins,
        token_file: args.token_file,
        token: std::env::var("SWITCHYARD_ADMIN_TOKEN").ok(),
        timeout: args.timeout,
        json: matches!(args.output, CtlOutput::Json),
        resolver: args.resolver,
    };
    ctl::run(command, options)
}

fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok((config, _)) => {
            println!("{}: ok: {}", path.display(), config.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &Path) -> ExitCode {
    match Gateway::serve_file(path) {
        Ok(gateway) => {
            gateway.run_until_signal();
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.to_string().lines() {
                tracing::error!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: Option<LogFormat>, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        None => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

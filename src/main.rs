//! The `switchyard` command: parses the command line, sets up logging, loads
//! the config and hands over to the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use switchyard::{config, demo, Gateway};
use tracing_subscriber::EnvFilter;

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
    let Some(path) = cli.config.as_deref() else {
        eprintln!("switchyard: no config file: pass -c FILE or set SWITCHYARD_CONFIG (or try `switchyard demo`)");
        return ExitCode::from(2);
    };
    match command {
        Command::Check => check(path),
        Command::Run | Command::Demo { .. } => {
            init_logging(cli.log_format, "info");
            run(path)
        }
    }
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

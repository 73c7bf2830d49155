//! The `switchyard` command: parses the command line, sets up logging, loads
//! the config and hands over to the library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use switchyard::{config, Gateway};
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
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(path) = cli.config.as_deref() else {
        eprintln!("switchyard: no config file: pass -c FILE or set SWITCHYARD_CONFIG");
        return ExitCode::from(2);
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => check(path),
        Command::Run => {
            init_logging(cli.log_format);
            run(path)
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
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

fn init_logging(format: Option<LogFormat>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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

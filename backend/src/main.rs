//! The `backend` binary: serve `$MESSAGE` on `0.0.0.0:$PORT`, or `backend healthcheck`.

use std::net::{Ipv4Addr, TcpListener};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// The demo backend behind rondo: answers $MESSAGE and says which replica served it.
#[derive(Debug, Parser)]
#[command(name = "backend", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Port to listen on (all interfaces).
    #[arg(long, env = "PORT", default_value_t = 8080, global = true)]
    port: u16,
    /// The body of `GET /`.
    #[arg(long, env = "MESSAGE", default_value = "Hello from rondo's backend")]
    message: String,
    /// Worker threads; 0 means one per CPU core.
    #[arg(long, env = "WORKERS", default_value_t = 0)]
    workers: usize,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exit 0 when GET /health on 127.0.0.1:$PORT answers 200, 1 otherwise.
    Healthcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck) = cli.command {
        return match backend::check_health(cli.port, Duration::from_secs(2)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(reason) => {
                eprintln!("backend healthcheck: {reason}");
                ExitCode::FAILURE
            }
        };
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    let served_by = gethostname::gethostname().to_string_lossy().into_owned();
    let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, cli.port)) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "backend: cannot listen on 0.0.0.0:{} (PORT): {err}",
                cli.port
            );
            return ExitCode::from(2);
        }
    };
    log::info!(
        "serving {:?} as {served_by} on 0.0.0.0:{}",
        cli.message,
        cli.port
    );
    let settings = backend::Settings {
        message: cli.message,
        served_by,
        workers: cli.workers,
        shutdown_timeout: cli.shutdown_timeout,
    };
    let result = actix_web::rt::System::new()
        .block_on(async move { backend::start(listener, settings)?.await });
    match result {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("backend: {err}");
            ExitCode::FAILURE
        }
    }
}

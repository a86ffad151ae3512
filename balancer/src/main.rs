//! The `rondo` binary: parse the configuration, then run the balancer until it is stopped.

use std::process::ExitCode;
use std::time::Duration;

use balancer::config::{explain, Healthcheck};
use balancer::discovery::DnsResolver;
use balancer::Config;
use clap::Parser;

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "healthcheck")
    {
        let check = Healthcheck::parse_from(std::env::args_os().skip(1));
        let port = check.port.unwrap_or(check.listen.port());
        return match balancer::healthcheck::listener_accepts(port, Duration::from_secs(2)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(reason) => {
                eprintln!("rondo healthcheck: {reason}");
                ExitCode::FAILURE
            }
        };
    }

    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(err) if err.use_stderr() => {
            eprint!("{}", explain(&err));
            return ExitCode::from(2);
        }
        Err(help_or_version) => {
            let _ = help_or_version.print();
            return ExitCode::SUCCESS;
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    log::info!("configuration: {}", config.effective());

    let listener = match balancer::server::bind_listener(config.listen) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "rondo: cannot listen on {} (RONDO_LISTEN): {err}; choose a free address and port",
                config.listen
            );
            return ExitCode::from(2);
        }
    };

    let result = actix_web::rt::System::new().block_on(async move {
        balancer::start(&config, listener, DnsResolver)
            .await?
            .wait()
            .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rondo: {err}");
            // A listener that cannot be bound is a configuration error, as for RONDO_LISTEN.
            match err.kind() {
                std::io::ErrorKind::AddrInUse
                | std::io::ErrorKind::AddrNotAvailable
                | std::io::ErrorKind::PermissionDenied => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

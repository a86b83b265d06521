//! `smq-nameserver`: flags, environment and TOML file to a [`Config`](smq_nameserver::Config)
//! (through [`Settings`]), tracing, then serve until SIGTERM or Ctrl-C. The only place errors
//! become `anyhow`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use smq_nameserver::settings::Settings;

#[tokio::main]
async fn main() -> ExitCode {
    match serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {}", smq_settings::error_chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let settings = Settings::load(Settings::parse())?;
    let log_level = settings.log_level().to_owned();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&log_level)
                .with_context(|| format!("invalid --log-level {log_level:?}"))?,
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = settings.into_config()?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let running = smq_nameserver::start(config).await?;
    println!("smq-nameserver listening on {scheme}://{}", running.addr());

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result.context("cannot wait for Ctrl-C")?,
    }
    tracing::info!("stopping");
    running.shutdown().await?;
    Ok(())
}

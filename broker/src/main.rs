//! The `smq-broker` binary: reads flags, `SMQ_*` variables and the TOML file, sets up logging,
//! runs the broker until SIGTERM or SIGINT and then stops it gracefully (exit status 0).

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use smq_broker::config::{BrokerConfig, Settings};
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    match run_until_stopped() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {}", smq_settings::error_chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run_until_stopped() -> anyhow::Result<()> {
    let config = BrokerConfig::load(Settings::parse()).context("invalid configuration")?;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level).with_context(|| {
        format!(
            "invalid --log-level {:?}: use error, warn, info, debug or trace",
            config.log_level
        )
    })?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .enable_all()
        .thread_name("smq-broker")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(config))
}

async fn run(config: BrokerConfig) -> anyhow::Result<()> {
    let data_dir = config.store.data_dir.clone();
    let broker = smq_broker::start(config)
        .await
        .with_context(|| format!("cannot start the broker on {}", data_dir.display()))?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let name = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down: finishing in-flight requests");
    broker
        .shutdown()
        .await
        .context("the broker did not stop cleanly")?;
    Ok(())
}

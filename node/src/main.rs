//! The `casesync` binary: parse arguments, install logging, run the command.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = casesync_node::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("CASESYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match casesync_node::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

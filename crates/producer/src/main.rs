use std::process::ExitCode;

use clap::Parser;
use producer::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Dlq(args)) => {
            producer::ops::dlq::telemetry(&args).init();
            producer::ops::dlq::run(args).await
        }
        Some(Command::Replay(args)) => {
            args.telemetry.init();
            producer::ops::replay::run(args).await
        }
        None => {
            cli.producer.telemetry.init();
            producer::run(cli.producer).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("producer: {error:#}");
            ExitCode::FAILURE
        }
    }
}

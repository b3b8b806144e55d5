use std::process::ExitCode;

use clap::Parser;
use producer::ProducerArgs;

#[tokio::main]
async fn main() -> ExitCode {
    let args = ProducerArgs::parse();
    args.telemetry.init();
    match producer::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("producer: {error:#}");
            ExitCode::FAILURE
        }
    }
}

use std::process::ExitCode;

use clap::Parser;
use stream_reader::ReaderArgs;

#[tokio::main]
async fn main() -> ExitCode {
    let args = ReaderArgs::parse();
    args.telemetry.init();
    match stream_reader::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("stream-reader: {error:#}");
            ExitCode::FAILURE
        }
    }
}

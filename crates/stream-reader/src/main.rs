use std::process::ExitCode;

use clap::Parser;
use stream_reader::ReaderArgs;

/// jemalloc serves every allocation of the process, librdkafka's too: glibc's malloc let the
/// resident set grow while the live heap stayed flat, and drained backlogs more slowly
/// (RELIABILITY.md, "Memory over time"; BENCHMARKS.md, "stream-reader: profile and allocator").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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

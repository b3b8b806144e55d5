//! A development-only CQL v4 server: the in-memory `kassandra` engine behind a TCP listener.
//!
//! It exists because this project's development machines cannot run Apache Cassandra. It is
//! never part of a production image. What it adds to the engine:
//!
//! * per-connection `USE <keyspace>` (the engine keeps one current keyspace for everybody, which
//!   would let parallel tests on different keyspaces see each other's tables);
//! * a panic inside the engine answers that one request with a `ServerError` instead of killing
//!   the connection or poisoning the server.
//!
//! Known limits of the engine (see README): no clustering DESC order, no range filters, no TTL,
//! no counters, no timeuuid, no `COUNT(*)`, no schema versions (clients must not wait for
//! schema agreement).

use std::{
    net::SocketAddr,
    panic::{AssertUnwindSafe, catch_unwind},
    process::ExitCode,
    sync::{Arc, Mutex, PoisonError},
};

use clap::Parser;
use futures::{SinkExt, StreamExt};
use kassandra::{
    KassandraSession,
    cql::query::QueryString,
    error::DbError,
    frame::{
        request::Request,
        request_stream,
        response::{Response, error::Error},
        response_sink,
    },
};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, error, info, warn};

/// Development CQL server (in-memory; loses everything on exit).
#[derive(Debug, Parser)]
#[command(version)]
struct Config {
    /// Address to listen on (loopback only by default).
    #[arg(long, env = "CQL_LISTEN", default_value = "127.0.0.1:9042")]
    listen: SocketAddr,
}

type Shared = Arc<Mutex<KassandraSession>>;

/// Keyspace name that never exists: selected for connections that issued no `USE`.
const NO_KEYSPACE: &str = "__no_keyspace_selected__";

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Keep panics inside the engine quiet: they are reported as request errors.
    std::panic::set_hook(Box::new(|info| debug!(%info, "engine panicked")));
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen).await?;
    info!(addr = %listener.local_addr()?, "CQL development server listening");
    let session: Shared = Arc::new(Mutex::new(KassandraSession::new()));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve(session.clone(), stream, peer));
                }
                Err(e) => warn!(error = %e, "accept failed"),
            },
            _ = shutdown() => {
                info!("shutting down");
                return Ok(());
            }
        }
    }
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn serve(session: Shared, mut stream: TcpStream, peer: SocketAddr) {
    debug!(%peer, "connection opened");
    let (read, write) = stream.split();
    let mut requests = request_stream(read);
    let mut responses = response_sink(write);
    let mut keyspace: Option<String> = None;
    while let Some(frame) = requests.next().await {
        let (frame, opcode, data) = match frame {
            Ok(f) => f,
            Err(e) => {
                debug!(%peer, error = %e, "connection closed");
                break;
            }
        };
        let response = match Request::deserialize(opcode, &data, frame.flags) {
            Ok(request) => handle(&session, &mut keyspace, request),
            Err(e) => {
                warn!(%peer, error = ?e, "cannot decode request");
                Response::Error(Error::new(DbError::ProtocolError, "cannot decode request"))
            }
        };
        if responses.send((response, frame.stream)).await.is_err() {
            break;
        }
    }
}

fn handle(session: &Shared, keyspace: &mut Option<String>, request: Request<'_>) -> Response {
    match request {
        Request::StartUp(_) | Request::Register { .. } => return Response::Ready,
        Request::Options => return Response::options(),
        Request::AuthResponse => {
            return Response::Error(Error::new(
                DbError::ProtocolError,
                "authentication is not supported by the development server",
            ));
        }
        _ => {}
    }
    let mut engine = session.lock().unwrap_or_else(PoisonError::into_inner);
    engine.use_keyspace(keyspace.as_deref().unwrap_or(NO_KEYSPACE));
    let outcome = catch_unwind(AssertUnwindSafe(|| match request {
        Request::Query(query) => {
            let used = match &query.query {
                QueryString::Use { keyspace } => Some(keyspace.clone()),
                _ => None,
            };
            let result = engine.process(query);
            if result.is_ok()
                && let Some(ks) = used
            {
                *keyspace = Some(ks);
            }
            result
        }
        Request::Prepare(query) => engine.prepare(query),
        Request::Execute(execute) => engine.execute(execute),
        Request::Batch(batch) => engine.process_batch(batch),
        _ => unreachable!("handled above"),
    }));
    match outcome {
        Ok(Ok(result)) => Response::Result(result),
        Ok(Err(e)) => Response::Error(e),
        Err(_) => {
            warn!("request made the engine panic; answered with ServerError");
            Response::Error(Error::new(
                DbError::ServerError,
                "the development CQL server cannot execute this request (engine panic)",
            ))
        }
    }
}

//! `tollgate-sidecar` — see `tollgate-sidecar --help` and sidecar/README.md.

use sidecar::config::{Config, usage};
use std::process::ExitCode;
use std::time::Duration;

// The page-zeroing of the system allocator showed up in long-text inference; mimalloc cut a 256-token
// request from 190 to 135 ms on this machine (see MEASURED.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{}", usage());
        return ExitCode::SUCCESS;
    }
    let cfg = match Config::parse(&args, |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tollgate-sidecar: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(cfg.log_json);
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // candle's own matrix products stay on one thread: the encoder splits each layer over the
        // compute threads itself (model.rs, bert.rs), which measured better than gemm's splitting.
        // SAFETY: no other thread exists yet, so nothing reads the environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("RAYON_NUM_THREADS", "1");
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "sidecar stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> Result<(), sidecar::Error> {
    let sidecar = sidecar::build(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", cfg.listen))?;
    let metrics = match cfg.metrics_addr {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| format!("--metrics-addr {a}: {e}"))?,
        ),
        None => None,
    };
    tracing::info!(listen = %cfg.listen, metrics = ?cfg.metrics_addr,
                   state = if cfg.redis_url.is_some() { "redis" } else { "memory" }, "serving");
    sidecar::serve(
        sidecar,
        listener,
        metrics,
        shutdown_signal(),
        Duration::from_secs(cfg.shutdown_grace_secs),
    )
    .await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! { _ = ctrl_c => {}, () = term => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_SIDECAR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init()
    } else {
        builder.init()
    }
}

//! A sidecar on its own runtime thread, on free loopback ports: for tests and benchmarks in other
//! crates that need the real thing without a separate process.

use crate::config::Config;
use std::net::SocketAddr;
use std::time::Duration;

pub struct Background {
    /// gRPC address.
    pub addr: SocketAddr,
    /// Prometheus `/metrics` address.
    pub metrics: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Builds the sidecar from `args` (flags as on the command line; `--listen` and
    /// `--metrics-addr` are ignored in favour of free ports) and serves it until [`Self::stop`] or
    /// drop. Returns once it accepts connections, or with the start-up error.
    pub fn start(args: &[String]) -> Result<Self, crate::Error> {
        let cfg = Config::parse(args, |_| None)?;
        let grace = Duration::from_secs(cfg.shutdown_grace_secs);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(SocketAddr, SocketAddr), String>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sidecar".into())
            .spawn(move || {
                let run = async {
                    let sidecar = crate::build(&cfg).await?;
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    let _ = ready_tx.send(Ok((listener.local_addr()?, metrics.local_addr()?)));
                    let shutdown = async {
                        let _ = stopped.await;
                    };
                    crate::serve(sidecar, listener, Some(metrics), shutdown, grace).await
                };
                let result = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(crate::Error::from)
                    .and_then(|rt| rt.block_on(run));
                if let Err(e) = result {
                    // Before ready this reaches the caller; after, the log is all there is.
                    tracing::error!(error = %e, "sidecar stopped");
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok((addr, metrics))) => Ok(Self {
                addr,
                metrics,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err("sidecar thread ended before it was ready".into()),
        }
    }

    /// Stops taking requests, lets in-flight ones finish (up to the grace period) and waits.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.shutdown();
    }
}

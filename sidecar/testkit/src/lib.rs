//! Test fixtures, kept out of the sidecar library: a sidecar on its own runtime thread, on free
//! loopback ports, for tests and benchmarks in other crates that need the real thing without a
//! separate process; and a real `redis-server` for the Redis backends.

use sidecar::config::Config;
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
    pub fn start(args: &[String]) -> Result<Self, sidecar::Error> {
        Self::start_at(args, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Like [`Self::start`], serving gRPC on `listen` (a port chosen before the sidecar starts, e.g.
    /// one an Envoy config already names).
    pub fn start_at(args: &[String], listen: SocketAddr) -> Result<Self, sidecar::Error> {
        let cfg = Config::parse(args, |_| None)?;
        let grace = Duration::from_secs(cfg.shutdown_grace_secs);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(SocketAddr, SocketAddr), String>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sidecar".into())
            .spawn(move || {
                let run = async {
                    let sidecar = sidecar::build(&cfg).await?;
                    let listener = tokio::net::TcpListener::bind(listen).await?;
                    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    let _ = ready_tx.send(Ok((listener.local_addr()?, metrics.local_addr()?)));
                    let shutdown = async {
                        let _ = stopped.await;
                    };
                    sidecar::serve(sidecar, listener, Some(metrics), shutdown, grace).await
                };
                let result = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(sidecar::Error::from)
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

/// A real `redis-server` (installed by `scripts/setup.sh`) on a free loopback port, without
/// persistence, in a temporary directory; killed and removed on drop. For tests of the Redis
/// backends here and in other crates.
pub struct RedisServer {
    pub port: u16,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl RedisServer {
    pub fn start() -> Result<Self, sidecar::Error> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("tollgate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e} (run scripts/setup.sh)"))?;
        // From here on, Drop kills and reaps the child whatever happens.
        let redis = Self { port, child, dir };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(redis);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("redis-server did not listen on {port}").into())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! Runs the real Envoy for a test: renders a config from `envoy/` onto free loopback ports, starts
//! `envoy` (pinned 1.40.0, installed into `.venv` by `scripts/setup.sh`), waits for `/ready`, and
//! kills it when dropped, printing its log if the test is failing.

use crate::ports::free_port;
use crate::repo_root;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Ports the configs in `envoy/` use by default; the harness replaces them with free ones.
pub mod default_ports {
    pub const LISTENER: u16 = 10000;
    pub const ADMIN: u16 = 9901;
    /// Cluster `llm_upstream` (the mock provider in the demo).
    pub const LLM_UPSTREAM: u16 = 8081;
    /// Cluster `inference_sidecar`.
    pub const SIDECAR: u16 = 50051;
    /// Cluster `idp_jwks` (the identity provider's JWKS endpoint, for jwt-auth).
    pub const JWKS: u16 = 8083;
    /// Clusters `llm_code`, `llm_math` and `llm_support` (two endpoints), which the semantic
    /// router's routes pick; each fails over to `LLM_UPSTREAM`.
    pub const CODE: u16 = 8091;
    pub const MATH: u16 = 8092;
    pub const SUPPORT: [u16; 2] = [8093, 8094];
}

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// How to run a config.
pub struct Options<'a> {
    /// Path under `envoy/`, e.g. `envoy.yaml`.
    pub config: &'a str,
    /// `(default port in the config, port to use instead)` for each upstream.
    pub upstreams: Vec<(u16, u16)>,
    /// Further textual replacements applied to the config (e.g. a plugin setting).
    pub replace: Vec<(String, String)>,
    /// HTTP filters (YAML list items) inserted just before the router, in order.
    pub filters: Vec<String>,
    pub concurrency: u32,
    /// Shipped filter snippets (`envoy/filters/<file>`), inserted before the router after `filters`.
    pub snippets: Vec<String>,
    /// Takes `envoy.filters.http.buffer` out of the chain.
    pub without_buffer_filter: bool,
}

impl<'a> Options<'a> {
    pub fn new(config: &'a str) -> Self {
        Self {
            config,
            upstreams: Vec::new(),
            replace: Vec::new(),
            filters: Vec::new(),
            concurrency: 1,
            snippets: Vec::new(),
            without_buffer_filter: false,
        }
    }

    pub fn upstream(mut self, default_port: u16, port: u16) -> Self {
        self.upstreams.push((default_port, port));
        self
    }

    pub fn replace(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.replace.push((from.into(), to.into()));
        self
    }

    /// Adds a wasm filter before the router: `wasm` is the file name under
    /// `target/wasm32-wasip1/wasm/` (built by `cargo wasm`), `config` its plugin configuration.
    pub fn wasm_filter(mut self, name: &str, wasm: &str, config: &serde_json::Value) -> Self {
        self.filters.push(wasm_filter_yaml(name, wasm, config));
        self
    }

    /// Adds a filter snippet as users paste it (`envoy/filters/<file>`): comment lines dropped, its
    /// `filename: target/…` pointed at this checkout's build.
    pub fn snippet(mut self, file: &str) -> Self {
        self.snippets.push(file.to_owned());
        self
    }

    /// Adds a filter of the table (xtask/src/filters.rs) by its shipped snippet.
    pub fn filter(self, f: &xtask::filters::Filter) -> Self {
        self.snippet(&format!("{}.yaml", f.name))
    }

    /// Takes the buffer filter out of `envoy.yaml`'s chain, so the filters see a client's body in
    /// the chunks it arrives in (the buffer filter hands on one complete body).
    pub fn without_buffer_filter(mut self) -> Self {
        self.without_buffer_filter = true;
        self
    }

    /// Like [`Self::wasm_filter`], for a filter that holds the request headers until it has read the
    /// body (`allow_on_headers_stop_iteration: true`, as its shipped snippet sets).
    pub fn wasm_filter_reading_body(mut self, name: &str, wasm: &str, config: &serde_json::Value) -> Self {
        self.filters.push(wasm_filter_entry(name, wasm, config, true));
        self
    }
}

/// The plugin configuration (the JSON in `configuration.value`) of a shipped snippet in
/// `envoy/filters/`.
pub fn snippet_config(file: &str) -> Result<serde_json::Value, Error> {
    let path = repo_root().join("envoy/filters").join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let entry = match xtask::chain::parse_yaml(&text, file)? {
        serde_json::Value::Array(mut items) if items.len() == 1 => items.remove(0),
        _ => return Err(format!("{file}: must hold one http_filters entry").into()),
    };
    Ok(xtask::chain::plugin_config(&entry).map_err(|e| format!("{file}: {e}"))?)
}

/// The wasm filter's file, built by `cargo wasm`.
pub fn wasm_path(file: &str) -> PathBuf {
    repo_root().join("target/wasm32-wasip1/wasm").join(file)
}

/// Refuses to test a stale module: `cargo wasm` writes beside each `.wasm` a dep-info file (`.d`)
/// naming every source file that went into it; one of them newer than the module means the tests
/// would run yesterday's filter.
pub fn check_fresh(wasm: &Path) -> Result<(), Error> {
    let built = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());
    let wasm_time = built(wasm).map_err(|e| format!("{}: {e}: run `cargo wasm`", wasm.display()))?;
    let dep_info = wasm.with_extension("d");
    let deps = std::fs::read_to_string(&dep_info)
        .map_err(|e| format!("{}: {e}: run `cargo wasm`", dep_info.display()))?;
    for source in dep_info_sources(&deps) {
        match built(Path::new(&source)) {
            Ok(t) if t <= wasm_time => {}
            Ok(_) => {
                return Err(format!("{} is older than {source}: run `cargo wasm`", wasm.display()).into());
            }
            Err(e) => return Err(format!("{source} (a source of {}): {e}", wasm.display()).into()),
        }
    }
    Ok(())
}

/// The sources a Makefile-style dep-info file lists after `target:` (spaces escaped as `\ `).
fn dep_info_sources(deps: &str) -> Vec<String> {
    let Some((_, sources)) = deps.lines().next().and_then(|l| l.split_once(": ")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = sources.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => cur.push(chars.next().unwrap_or(' ')),
            ' ' if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            ' ' => {}
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// One `http_filters` entry running `wasm` in V8 with `config` (JSON) as its configuration, as
/// a YAML list of one item.
pub fn wasm_filter_yaml(name: &str, wasm: &str, config: &serde_json::Value) -> String {
    wasm_filter_entry(name, wasm, config, false)
}

fn wasm_filter_entry(name: &str, wasm: &str, config: &serde_json::Value, reads_body: bool) -> String {
    let mut wasm_config = serde_json::json!({
        "name": name,
        "root_id": name,
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config.to_string()},
        "vm_config": {"runtime": "envoy.wasm.runtime.v8",
                      "code": {"local": {"filename": wasm_path(wasm).display().to_string()}}},
    });
    if reads_body {
        wasm_config["allow_on_headers_stop_iteration"] = serde_json::json!(true);
    }
    let entry = serde_json::json!([{"name": name, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": wasm_config,
    }}]);
    xtask::chain::to_yaml(&entry).unwrap_or_default()
}

pub struct Envoy {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    log_path: PathBuf,
    dir: PathBuf,
}

/// The Envoy binary: `$ENVOY_BIN`, else `.venv/bin/envoy` of this repository.
pub fn envoy_bin() -> PathBuf {
    std::env::var_os("ENVOY_BIN").map_or_else(|| repo_root().join(".venv/bin/envoy"), PathBuf::from)
}

impl Envoy {
    pub fn start(opts: Options<'_>) -> Result<Self, Error> {
        let bin = envoy_bin();
        if !bin.exists() {
            return Err(format!(
                "{} not found: run scripts/setup.sh (or set ENVOY_BIN)",
                bin.display()
            )
            .into());
        }
        let template_path = repo_root().join("envoy").join(opts.config);
        let mut config = std::fs::read_to_string(&template_path)
            .map_err(|e| format!("reading {}: {e}", template_path.display()))?;
        let port = free_port()?;
        let admin_port = free_port()?;
        let mut filters = opts.filters.clone();
        for file in &opts.snippets {
            let path = repo_root().join("envoy/filters").join(file);
            filters.push(
                std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?,
            );
        }
        // Textual edits first, on the sources (the template and the filters' YAML), then the
        // document is assembled as data.
        for (from, to) in &opts.replace {
            let mut hit = false;
            for text in std::iter::once(&mut config).chain(filters.iter_mut()) {
                if text.contains(from.as_str()) {
                    *text = text.replace(from.as_str(), to);
                    hit = true;
                }
            }
            if !hit {
                return Err(format!("{}: no `{from}` to replace", opts.config).into());
            }
        }
        let mut doc = xtask::chain::Config(xtask::chain::parse_yaml(&config, opts.config)?);
        if opts.without_buffer_filter {
            let list = doc.http_filters()?;
            let before = list.len();
            list.retain(|f| f["name"] != "envoy.filters.http.buffer");
            if list.len() == before {
                return Err(format!("{}: no envoy.filters.http.buffer to take out", opts.config).into());
            }
        }
        if !filters.is_empty() {
            let mut entries = Vec::new();
            for text in &filters {
                match xtask::chain::parse_yaml(text, "a filter")? {
                    serde_json::Value::Array(items) => entries.extend(items),
                    other => {
                        return Err(
                            format!("a filter must be a YAML list of http_filters, got {other}").into(),
                        );
                    }
                }
            }
            doc.insert_before_router(entries)?;
        }
        doc.set_wasm_root(&repo_root().display().to_string());
        let ports = [
            (default_ports::LISTENER, port),
            (default_ports::ADMIN, admin_port),
        ]
        .into_iter()
        .chain(opts.upstreams)
        .map(|(from, to)| (u64::from(from), u64::from(to)))
        .collect();
        doc.set_ports(&ports)
            .map_err(|e| format!("{}: {e}", opts.config))?;
        // Wasm filters name their module; native filters (e.g. jwt_authn) have none.
        for file in doc.wasm_files() {
            check_fresh(Path::new(&file))?;
        }
        let config = xtask::chain::to_yaml(&doc.0)?;
        let dir = std::env::temp_dir().join(format!("tollgate-envoy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, config)?;
        let log_path = dir.join("envoy.log");

        let mut cmd = Command::new(&bin);
        cmd.current_dir(repo_root())
            .arg("-c")
            .arg(&config_path)
            .args([
                "--use-dynamic-base-id",
                "--concurrency",
                &opts.concurrency.to_string(),
                "-l",
                "info",
                // Flush the log often, so a failing test prints what Envoy saw up to the failure.
                "--file-flush-interval-msec",
                "50",
            ])
            .arg("--log-path")
            .arg(&log_path)
            .stdin(Stdio::null())
            // The shipped configs write the access log to stdout.
            .stdout(Stdio::from(std::fs::File::create(dir.join("access.log"))?))
            .stderr(Stdio::null());
        kill_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", bin.display()))?;
        let mut envoy = Self {
            child,
            port,
            admin_port,
            log_path,
            dir,
        };
        envoy.wait_ready(Duration::from_secs(30))?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("envoy exited with {status} before ready:\n{}", self.log()).into());
            }
            if http_get_status("127.0.0.1", self.admin_port, "/ready") == Some(200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("envoy not ready after {timeout:?}:\n{}", self.log()).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// The Envoy process id (for RSS in benchmarks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The access log so far (the configs log to stdout), one JSON object per line.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The access log once it has at least `n` lines (Envoy writes a line when a request ends);
    /// what it has after 5 s otherwise.
    pub fn wait_access_log(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines = self.access_log();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of counter/gauge `name` from `/stats`, if present.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let body = http_get_body("127.0.0.1", self.admin_port, &format!("/stats?filter={name}"))?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.trim().parse().ok())
    }

    /// The cumulative quantile `q` (e.g. `"P50"`) of a histogram, as `/stats` shows it after
    /// Envoy's next stats flush (every 5 s by default); `None` before any sample was flushed.
    pub fn histogram_quantile(&self, name: &str, q: &str) -> Option<f64> {
        let body = http_get_body("127.0.0.1", self.admin_port, &format!("/stats?filter={name}"))?;
        let line = body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))?;
        // `P0(nan,1) P25(nan,1.025) P50(2,1.05) …`: (interval, cumulative).
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(q)?.strip_prefix('(')?.strip_suffix(')'))
            .and_then(|v| v.split_once(',')?.1.parse().ok())
    }

    pub fn config_dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- envoy log ({}) ----\n{}\n---- end of envoy log ----",
                self.log_path.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The child gets SIGKILL when the thread that spawned it dies, so even a test process killed
/// outright (no destructors) leaves no Envoy behind. Each test owns its processes on its own thread.
#[allow(unsafe_code)]
fn kill_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which is
    // async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Minimal blocking GET for readiness checks (no runtime needed).
fn http_get(host: &str, port: u16, path: &str) -> Option<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect((host, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn http_get_status(host: &str, port: u16, path: &str) -> Option<u16> {
    http_get(host, port, path)?.split(' ').nth(1)?.parse().ok()
}

fn http_get_body(host: &str, port: u16, path: &str) -> Option<String> {
    let resp = http_get(host, port, path)?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Some(body.to_owned());
    }
    // De-chunk: `<hex size>\r\n<data>\r\n` … `0\r\n\r\n`.
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn dep_info_lists_every_source_with_escaped_spaces() {
        let d = "/t/a.wasm: /src/lib.rs /my\\ dir/x.rs /src/b.rs\n\n/src/lib.rs:\n";
        assert_eq!(dep_info_sources(d), ["/src/lib.rs", "/my dir/x.rs", "/src/b.rs"]);
        assert!(dep_info_sources("").is_empty());
    }

    #[test]
    fn a_module_older_than_one_of_its_sources_is_refused() {
        let dir = std::env::temp_dir().join(format!("tollgate-fresh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (wasm, source) = (dir.join("f.wasm"), dir.join("lib.rs"));
        std::fs::write(&source, "fn main() {}").unwrap();
        std::fs::write(&wasm, b"\0asm").unwrap();
        std::fs::write(
            dir.join("f.d"),
            format!("{}: {}\n", wasm.display(), source.display()),
        )
        .unwrap();
        let at = |p: &Path, t: SystemTime| {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(t)
        };
        let now = SystemTime::now();
        at(&source, now - Duration::from_secs(60)).unwrap();
        at(&wasm, now - Duration::from_secs(30)).unwrap();
        check_fresh(&wasm).unwrap();
        at(&source, now).unwrap();
        let e = check_fresh(&wasm).unwrap_err().to_string();
        assert!(e.contains("is older than") && e.contains("lib.rs"), "{e}");
        std::fs::remove_file(dir.join("f.d")).unwrap();
        assert!(
            check_fresh(&wasm)
                .unwrap_err()
                .to_string()
                .contains("run `cargo wasm`")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

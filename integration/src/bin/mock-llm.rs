//! `mock-llm [--listen 127.0.0.1:8081]…` — the mock OpenAI/Anthropic upstream for the demo and tests.
//! `--listen` may repeat: one process then stands for several providers (the demo's routed clusters).

use std::sync::Arc;
use tollgate_it::mock::{Journal, serve};

fn main() -> std::process::ExitCode {
    let mut listen: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--listen", Some(v)) => listen.push(v),
            _ => {
                eprintln!("usage: mock-llm [--listen ADDR:PORT]...");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mock-llm: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if listen.is_empty() {
        listen.push("127.0.0.1:8081".to_owned());
    }
    rt.block_on(async {
        let journal = Arc::new(Journal::default());
        let mut servers = tokio::task::JoinSet::new();
        for addr in &listen {
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("mock-llm: cannot listen on {addr}: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            servers.spawn(serve(listener, journal.clone()));
        }
        // Load the tokenizer tables before the first request, so its latency is the mock's own.
        let _ = tollgate_it::tokens::count("gpt-4o", "warm up");
        let _ = tollgate_it::tokens::count("gpt-4", "warm up");
        eprintln!("mock-llm: listening on {}", listen.join(", "));
        tokio::select! {
            _ = servers.join_next() => {}
            _ = tokio::signal::ctrl_c() => eprintln!("mock-llm: stopping"),
        }
        std::process::ExitCode::SUCCESS
    })
}

//! The proxy library alone, from a TOML configuration (`shadowtap proxy --config`'s format),
//! for `bench/proxy-before-after.sh`: the same file builds against an older revision of this
//! crate, so two versions of the proxy can be measured side by side without building the
//! whole CLI (and its query engine) twice. Prints the address it listens on; stops on Ctrl-C.
//!
//!   cargo run --release -p shadowtap-proxy --example proxy_from_config -- proxy.toml

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: proxy_from_config CONFIG.toml");
        std::process::exit(64)
    });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(66)
    });
    let config = shadowtap_proxy::ProxyConfig::from_toml(&text).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(64)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let running = match shadowtap_proxy::start(config, None).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1)
            }
        };
        println!("{}", running.addr);
        let _ = tokio::signal::ctrl_c().await;
        running.shutdown();
        let _ = running.wait().await;
    });
}

// Temporary entry point until the CLI lands.
#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rsipstack=warn,sqlx=warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let path = std::env::args().nth(2).unwrap_or_else(|| "config/callgate.toml".into());
    let cfg = match callgate::config::Config::load(std::path::Path::new(&path), true) {
        Ok(c) => c,
        Err(e) => { eprintln!("error: {e}"); std::process::exit(2) }
    };
    if let Err(e) = callgate::serve::run(cfg).await { eprintln!("error: {e}"); std::process::exit(1) }
}

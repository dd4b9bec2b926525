//! `posguard-collector`: the fleet's central collector and its operations CLI. All logic lives
//! in the library ([`posguard_collector::cli`]).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    posguard_collector::cli::main()
}

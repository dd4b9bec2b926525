//! `posguard-collector`: the fleet's central collector and its operations CLI. All logic lives
//! in the library ([`posguard_collector::cli`]).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    posguard_collector::logging::init("posguard-collector");
    posguard_collector::cli::main()
}

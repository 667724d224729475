//! `tessera-coordinator`: see [`tessera_coordinator::cli`].

fn main() -> std::process::ExitCode {
    tessera_coordinator::cli::main(std::env::args_os())
}

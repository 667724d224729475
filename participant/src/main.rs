//! `tessera-participant`: see [`tessera_participant::cli`].

fn main() -> std::process::ExitCode {
    tessera_participant::cli::main(std::env::args_os())
}

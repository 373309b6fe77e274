//! The `callgate` binary: see `callgate --help` and `src/cli/`.

fn main() -> std::process::ExitCode {
    callgate::cli::main()
}

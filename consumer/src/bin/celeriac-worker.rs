//! `celeriac-worker`: runs the built-in tasks; see `--help`.

fn main() -> std::process::ExitCode {
    celeriac_consumer::cli::main_with(|_| {})
}

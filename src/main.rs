//! The `vipgate` binary: the command line of the library (see src/lib.rs).

fn main() -> std::process::ExitCode {
    vipgate::cli::main()
}

fn main() -> std::process::ExitCode {
    steadfast::cli::main()
}

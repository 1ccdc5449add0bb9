fn main() -> std::process::ExitCode {
    payguard::cli::main()
}

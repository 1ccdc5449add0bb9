// The allocator of the payguard binary (see Cargo.toml for why); the library leaves it to callers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    payguard::cli::main()
}

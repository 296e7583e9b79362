//! The `krest` command-line tool; everything lives in [`krest_client::cli`].

fn main() -> std::process::ExitCode {
    krest_client::cli::main()
}

//! mongod-sim: a test tool that behaves like a PSMDB mongod (see README.md).

fn main() -> std::process::ExitCode {
    mongod_sim::process::main()
}

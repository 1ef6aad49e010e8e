//! The `shroud` command-line tool's library: the glue of every subcommand (flags to calls,
//! logging, exit codes), so that tests call exactly what the CLI runs. The work itself is in
//! the crates under `crates/`.

pub mod cmd;

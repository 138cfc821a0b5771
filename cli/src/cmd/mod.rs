//! One module per subcommand.

pub mod dev;
pub mod kill;
pub mod run;

//! One module per subcommand.

pub mod acl;
pub mod cp;
pub mod dev;
pub mod job;
pub mod kill;
pub mod logs;
pub mod push;
pub mod run;
pub mod tls;

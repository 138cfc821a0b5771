//! One module per subcommand.

pub mod acl;
pub mod agent;
pub mod cp;
pub mod dev;
pub mod job;
pub mod kill;
pub mod logs;
pub mod push;
pub mod run;
pub mod status;
pub mod tasks;
pub mod tls;

//! `skiff tls`: the fleet's CA and its role certificates (as `nomad tls`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use skiff_tls::{Ca, Identity, Validity};

use crate::exit::CliError;

#[derive(Debug, clap::Args)]
pub struct TlsArgs {
    #[command(subcommand)]
    pub command: TlsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TlsCommand {
    /// The fleet's certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Certificates of coordinators, agents and clients, signed by the fleet's CA.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Writes a new CA: skiff-ca.pem (give it to every party) and skiff-ca-key.pem (keep it secret).
    Create {
        /// Directory to write into.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "Skiff fleet CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 5 * 365)]
        days: u32,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Writes a certificate and its key, named after its role: coordinator.pem and
    /// coordinator-key.pem, agent-NAME.pem, client-NAME.pem, etcd.pem.
    Create(CertCreate),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("role").required(true).args(["coordinator", "agent", "client", "etcd"])))]
pub struct CertCreate {
    /// A coordinator's certificate (serves the API; dials its peers and etcd).
    #[arg(long)]
    pub coordinator: bool,
    /// An agent's certificate: the agent registers under this name and no other.
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// A client's certificate (the CLI, frameworks), named NAME; what it may do is its ACL token's.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "cli")]
    pub client: Option<String>,
    /// An etcd member's certificate (server and peer).
    #[arg(long)]
    pub etcd: bool,
    /// Host name or IP address the coordinator or etcd member is dialed at (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// The CA's certificate and key.
    #[arg(long, default_value = "skiff-ca.pem")]
    pub ca: PathBuf,
    #[arg(long, default_value = "skiff-ca-key.pem")]
    pub ca_key: PathBuf,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Directory to write into.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

pub fn run(args: TlsArgs) -> Result<ExitCode, CliError> {
    match args.command {
        TlsCommand::Ca { command: CaCommand::Create { dir, name, days } } => {
            let (_, issued) = Ca::create(&name, Validity::days(days)).map_err(|e| CliError::Other(e.to_string()))?;
            let cert = dir.join("skiff-ca.pem");
            let key = dir.join("skiff-ca-key.pem");
            write_new(&cert, &issued.cert_pem, 0o644)?;
            write_new(&key, &issued.key_pem, 0o600)?;
            println!("wrote {} and {} (keep the key secret)", cert.display(), key.display());
        }
        TlsCommand::Cert { command: CertCommand::Create(create) } => {
            let read = |path: &Path| {
                std::fs::read_to_string(path).map_err(|e| CliError::BadInput(format!("{}: {e}", path.display())))
            };
            let ca =
                Ca::load(&read(&create.ca)?, &read(&create.ca_key)?).map_err(|e| CliError::BadInput(e.to_string()))?;
            let (identity, stem) = if create.coordinator {
                (Identity::coordinator(), "coordinator".to_owned())
            } else if create.etcd {
                (Identity::etcd(), "etcd".to_owned())
            } else if let Some(name) = &create.agent {
                (Identity::agent(name).map_err(|e| CliError::BadInput(e.to_string()))?, format!("agent-{name}"))
            } else {
                let name = create.client.as_deref().unwrap_or("cli");
                (Identity::client(name).map_err(|e| CliError::BadInput(e.to_string()))?, format!("client-{name}"))
            };
            let issued = ca
                .issue(&identity, &create.hosts, Validity::days(create.days))
                .map_err(|e| CliError::BadInput(e.to_string()))?;
            let cert = create.dir.join(format!("{stem}.pem"));
            let key = create.dir.join(format!("{stem}-key.pem"));
            write_new(&cert, &issued.cert_pem, 0o644)?;
            write_new(&key, &issued.key_pem, 0o600)?;
            println!("wrote {} and {} for {identity}", cert.display(), key.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a file that must not exist yet, with `mode`.
pub fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), CliError> {
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                CliError::BadInput(format!("{} exists already; remove it first to replace it", path.display()))
            }
            _ => CliError::BadInput(format!("{}: {e}", path.display())),
        })?;
    file.write_all(text.as_bytes()).map_err(|e| CliError::Other(format!("{}: {e}", path.display())))
}

//! `skiff dev`'s security: a CA of its own, certificates for its coordinator, its agent and the
//! CLI, and a management token, so that the single-node fleet runs as a real one does (TLS and
//! ACLs on). The client's files go where the CLI looks for them ([`crate::access::dev_dir`]).

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use skiff_proto as pb;
use skiff_tls::{Ca, Credentials, Identity, Role, Validity};

use crate::access::{self, Access};
use crate::exit::CliError;

/// The credentials of one `skiff dev` run.
#[derive(Debug)]
pub struct DevPki {
    pub coordinator: Credentials,
    pub agent: Credentials,
    pub client: Credentials,
    /// Where the client's files are (removed when dropped).
    pub client_dir: PathBuf,
}

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(format!("setting up TLS: {e}"))
}

impl DevPki {
    /// A fresh CA and certificates (valid 30 days) for a coordinator at `addr`, an agent named
    /// `agent`, and the CLI, whose files are written to the directory the CLI reads for `addr`.
    pub fn create(addr: &str, agent: &str) -> Result<Self, CliError> {
        let (ca, ca_files) = Ca::create("skiff dev CA", Validity::days(30)).map_err(other)?;
        let ip = addr.rsplit_once(':').map_or(addr, |(host, _)| host).to_owned();
        let hosts = vec![ip, "localhost".to_owned()];
        let issue =
            |identity: &Identity, hosts: &[String]| ca.issue(identity, hosts, Validity::days(30)).map_err(other);
        let coordinator = issue(&Identity::coordinator(), &hosts)?;
        let agent = issue(&Identity::agent(agent).map_err(other)?, &[])?;
        let client = issue(&Identity::client("dev").map_err(other)?, &[])?;
        let ca_pem = ca_files.cert_pem;
        let load = |issued: &skiff_tls::Issued, role| {
            Credentials::from_pem(&ca_pem, &issued.cert_pem, &issued.key_pem, role).map_err(other)
        };
        let client_dir = access::dev_dir(addr);
        let pki = DevPki {
            coordinator: load(&coordinator, Role::Coordinator)?,
            agent: load(&agent, Role::Agent)?,
            client: load(&client, Role::Client)?,
            client_dir: client_dir.clone(),
        };
        // A directory a previous run left (killed before it could remove it) is replaced.
        let _ = std::fs::remove_dir_all(&client_dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&client_dir)
            .map_err(|e| other(format!("{}: {e}", client_dir.display())))?;
        write(&client_dir.join("ca.pem"), &ca_pem)?;
        write(&client_dir.join("client.pem"), &client.cert_pem)?;
        write(&client_dir.join("client-key.pem"), &client.key_pem)?;
        Ok(pki)
    }

    /// Bootstraps the ACLs of the coordinator at `addr` and keeps the management token with the
    /// client's files.
    pub async fn bootstrap(&self, addr: &str) -> Result<(), CliError> {
        let access = Access::new(Some(self.client.clone()), None);
        let channel = crate::client::leader_channel_with(&access, &[addr.to_owned()]).await?;
        let mut acl = pb::acl_service_client::AclServiceClient::new(channel);
        let secret = acl.bootstrap(pb::AclBootstrapRequest {}).await.map_err(|s| CliError::from_status(&s))?;
        write(&self.client_dir.join("token"), &format!("{}\n", secret.into_inner().secret))
    }

    /// The `export` lines that point other tools at the client's files.
    pub fn exports(&self) -> String {
        let dir = &self.client_dir;
        format!(
            "export SKIFF_CA_CERT={0}/ca.pem SKIFF_CLIENT_CERT={0}/client.pem SKIFF_CLIENT_KEY={0}/client-key.pem SKIFF_TOKEN_FILE={0}/token",
            dir.display()
        )
    }
}

impl Drop for DevPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.client_dir);
    }
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| other(format!("{}: {e}", path.display())))
}

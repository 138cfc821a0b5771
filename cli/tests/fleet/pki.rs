//! The test fleets' PKI: one CA per test process, certificates issued on demand into a
//! temporary directory, and what each fleet's coordinators want of a client (its token), by
//! address, so that every helper dialing an address presents the right credentials.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use skiff_tls::{Ca, Identity, Role, TlsFiles, Validity};

pub struct Pki {
    ca: Ca,
    dir: tempfile::TempDir,
    issued: Mutex<HashMap<String, TlsFiles>>,
}

/// The process's PKI.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ca, issued) = Ca::create("skiff test CA", Validity::days(2)).expect("CA");
        std::fs::write(dir.path().join("ca.pem"), issued.cert_pem).expect("write CA");
        Pki { ca, dir, issued: Mutex::new(HashMap::new()) }
    })
}

impl Pki {
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The files of `identity`'s certificate (issued on first use; coordinators and etcd members
    /// for 127.0.0.1 and localhost).
    pub fn files(&self, identity: &Identity) -> TlsFiles {
        let stem = identity.uri().trim_start_matches("skiff://").replace('/', "-");
        let mut issued = self.issued.lock().unwrap();
        if let Some(files) = issued.get(&stem) {
            return files.clone();
        }
        let hosts = match identity.role {
            Role::Coordinator | Role::Etcd => vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            _ => Vec::new(),
        };
        let cert = self.ca.issue(identity, &hosts, Validity::days(2)).expect("issue");
        let files = self.write(&stem, &cert);
        issued.insert(stem, files.clone());
        files
    }

    /// Writes `cert` as `<stem>.pem` and `<stem>-key.pem`, with the CA.
    pub fn write(&self, stem: &str, cert: &skiff_tls::Issued) -> TlsFiles {
        let files = TlsFiles {
            ca: self.ca_path(),
            cert: self.dir.path().join(format!("{stem}.pem")),
            key: self.dir.path().join(format!("{stem}-key.pem")),
        };
        std::fs::write(&files.cert, &cert.cert_pem).expect("write cert");
        std::fs::write(&files.key, &cert.key_pem).expect("write key");
        files
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    pub fn coordinator(&self) -> TlsFiles {
        self.files(&Identity::coordinator())
    }

    pub fn agent(&self, name: &str) -> TlsFiles {
        self.files(&Identity::agent(name).expect("agent name"))
    }

    pub fn client(&self) -> TlsFiles {
        self.files(&Identity::client("test").expect("client name"))
    }

    pub fn etcd(&self) -> TlsFiles {
        self.files(&Identity::etcd())
    }

    /// Loaded client credentials.
    pub fn client_credentials(&self) -> skiff_tls::Credentials {
        self.client().load(Role::Client).expect("client credentials")
    }
}

/// A fresh agent name.
pub fn agent_name() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("agent-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Arguments giving a coordinator or agent `files`.
pub fn tls_args(cmd: &mut Command, files: &TlsFiles) {
    cmd.arg("--ca-cert").arg(&files.ca).arg("--cert").arg(&files.cert).arg("--key").arg(&files.key);
}

/// What the coordinators at an address want of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// Nothing from the harness: plaintext, or `skiff dev` (whose files the CLI finds itself).
    Nothing,
    /// The test CA's client certificate and this token.
    Token(String),
    /// The client certificate only (a fleet not registered yet: being bootstrapped).
    Certificate,
}

fn registry() -> &'static Mutex<HashMap<String, Want>> {
    static FLEETS: OnceLock<Mutex<HashMap<String, Want>>> = OnceLock::new();
    FLEETS.get_or_init(Default::default)
}

/// Records that the coordinators at `addrs` are secured with `token` (`None`: they want nothing
/// of the harness).
pub fn register(addrs: &[String], token: Option<String>) {
    let want = token.map_or(Want::Nothing, Want::Token);
    let mut fleets = registry().lock().unwrap();
    for addr in addrs {
        fleets.insert(addr.clone(), want.clone());
    }
}

/// What the fleet that `addrs` (comma-separated) belongs to wants, by its first address.
pub fn want_of(addrs: &str) -> Want {
    let first = addrs.split(',').next().unwrap_or_default();
    registry().lock().unwrap().get(first).cloned().unwrap_or(Want::Certificate)
}

/// Gives a `skiff` command the client's certificate and the fleet's token, as the fleet wants.
pub fn client_env(cmd: &mut Command, addrs: &str) {
    match want_of(addrs) {
        Want::Nothing => {}
        Want::Token(token) => {
            client_tls_env(cmd);
            cmd.env("SKIFF_TOKEN", token);
        }
        Want::Certificate => client_tls_env(cmd),
    }
}

/// Only the client's certificate (no token).
pub fn client_tls_env(cmd: &mut Command) {
    let files = pki().client();
    cmd.env("SKIFF_CA_CERT", &files.ca).env("SKIFF_CLIENT_CERT", &files.cert).env("SKIFF_CLIENT_KEY", &files.key);
}

/// The CLI library's access to the fleet at `addrs`.
pub fn access(addrs: &str) -> skiff_cli::access::Access {
    match want_of(addrs) {
        Want::Nothing => skiff_cli::access::Access::default(),
        Want::Token(token) => skiff_cli::access::Access::new(Some(pki().client_credentials()), Some(token)),
        Want::Certificate => skiff_cli::access::Access::new(Some(pki().client_credentials()), None),
    }
}

/// A channel to the coordinator at `addr` (not following a redirect) with the fleet's access.
pub async fn channel(addr: &str) -> Result<skiff_cli::client::Channel, String> {
    let access = access(addr);
    let endpoint =
        skiff_tls::coordinator_endpoint(addr, access.tls())?.connect_timeout(std::time::Duration::from_secs(1));
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    Ok(tonic::service::interceptor::InterceptedService::new(channel, access.bearer()))
}

/// Bootstraps the ACLs of the fleet at `addrs` with the `skiff` CLI; returns the secret.
pub fn bootstrap(addrs: &str) -> String {
    let mut cmd = Command::new(super::bin("skiff"));
    cmd.args(["acl", "bootstrap", "--coordinators", addrs]);
    client_tls_env(&mut cmd);
    let out = super::run_bounded(cmd, None, std::time::Duration::from_secs(30));
    assert!(out.status.success(), "skiff acl bootstrap: {}", super::text(&out.stderr));
    let stdout = super::text(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("secret:"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| panic!("no secret in {stdout}"))
}

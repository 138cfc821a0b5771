//! How the CLI proves who it is: a client certificate of the fleet's CA and an ACL token, from the
//! environment or from the files `skiff dev` leaves for the CLI.
//!
//! - `SKIFF_CA_CERT`, `SKIFF_CLIENT_CERT`, `SKIFF_CLIENT_KEY`: PEM files; all three, or none.
//! - `SKIFF_TOKEN` (the secret), or `SKIFF_TOKEN_FILE` (a file holding it).
//! - Neither TLS variable set: the directory `skiff dev` writes for its coordinator's address,
//!   `$SKIFF_HOME/dev/<host>_<port>/` (`SKIFF_HOME` defaults to `~/.skiff`), if there is one.

use std::path::{Path, PathBuf};

use skiff_tls::{Credentials, Role, TlsFiles};
use tonic::metadata::{Ascii, MetadataValue};

use crate::exit::CliError;

/// TLS credentials and a token (either may be absent: a plaintext fleet needs neither).
#[derive(Debug, Clone, Default)]
pub struct Access {
    tls: Option<Credentials>,
    token: Option<String>,
}

impl Access {
    pub fn new(tls: Option<Credentials>, token: Option<String>) -> Self {
        Self { tls, token }
    }

    pub fn tls(&self) -> Option<&Credentials> {
        self.tls.as_ref()
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// From the environment; without TLS variables, from `skiff dev`'s files for the first of
    /// `coordinators` if it left some.
    pub fn from_env(coordinators: &[String]) -> Result<Self, CliError> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let files = TlsFiles::from_parts(
            var("SKIFF_CA_CERT"),
            var("SKIFF_CLIENT_CERT"),
            var("SKIFF_CLIENT_KEY"),
            ["SKIFF_CA_CERT", "SKIFF_CLIENT_CERT", "SKIFF_CLIENT_KEY"],
        )
        .map_err(|e| CliError::BadInput(e.to_string()))?;
        let mut token = match (std::env::var("SKIFF_TOKEN").ok().filter(|t| !t.is_empty()), var("SKIFF_TOKEN_FILE")) {
            (Some(token), _) => Some(token.trim().to_owned()),
            (None, Some(path)) => Some(read_token(&path)?),
            (None, None) => None,
        };
        let files = match files {
            Some(files) => Some(files),
            None => match coordinators.first().map(|a| dev_dir(a)).filter(|d| d.join("ca.pem").exists()) {
                Some(dir) => {
                    if token.is_none() && dir.join("token").exists() {
                        token = Some(read_token(&dir.join("token"))?);
                    }
                    Some(dev_files(&dir))
                }
                None => None,
            },
        };
        let tls = match files {
            Some(files) => Some(files.load(Role::Client).map_err(|e| CliError::BadInput(e.to_string()))?),
            None => None,
        };
        Ok(Self { tls, token })
    }

    /// What adds the token to every call.
    pub fn bearer(&self) -> Bearer {
        Bearer(self.token.as_ref().and_then(|t| format!("Bearer {t}").parse().ok()))
    }
}

fn read_token(path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::BadInput(format!("SKIFF_TOKEN_FILE {}: {e}", path.display())))?;
    match text.trim() {
        "" => Err(CliError::BadInput(format!("token file {} is empty", path.display()))),
        token => Ok(token.to_owned()),
    }
}

/// Where Skiff keeps the CLI's files: `$SKIFF_HOME`, else `~/.skiff`.
pub fn home() -> PathBuf {
    match std::env::var_os("SKIFF_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => dir.into(),
        None => std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from).join(".skiff"),
    }
}

/// The directory `skiff dev` serving at `address` leaves its client files in.
pub fn dev_dir(address: &str) -> PathBuf {
    home().join("dev").join(address.replace([':', '/'], "_"))
}

/// The client files in a `skiff dev` directory.
pub fn dev_files(dir: &Path) -> TlsFiles {
    TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("client.pem"), key: dir.join("client-key.pem") }
}

/// Adds `authorization: Bearer <token>` to each call.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A dial error in words: what a failed TLS handshake means, and a hint when the CLI has no TLS
/// settings and the coordinator wants them.
pub fn explain(error: &str, access: &Access) -> String {
    let closed = ["broken pipe", "operation was canceled", "connection error", "connection reset", "close_notify"]
        .iter()
        .any(|c| error.contains(c));
    let hint = if error.contains("UnknownIssuer") || error.contains("BadSignature") {
        Some("the coordinator's certificate is not from the CA in SKIFF_CA_CERT")
    } else if error.contains("NotValidForName") {
        Some("the server's certificate is not a Skiff coordinator's")
    } else if error.contains("CertificateExpired") || error.contains("Expired") {
        Some("a certificate has expired (or is not valid yet)")
    } else if access.tls.is_none()
        && (closed || error.contains("h2 protocol error") || error.contains("frame with invalid size"))
    {
        Some("does this coordinator require TLS? set SKIFF_CA_CERT, SKIFF_CLIENT_CERT and SKIFF_CLIENT_KEY")
    } else if error.contains("UnknownCA") || error.contains("BadCertificate") {
        Some("the coordinator refused the client certificate: it is not from the fleet's CA")
    } else if access.tls.is_some() && closed {
        // Under TLS 1.3 the client learns of a refused certificate only as a closed connection.
        Some(
            "the coordinator closed the connection after the TLS handshake: it refused the client certificate \
             (not from the fleet's CA, expired, or not valid yet)",
        )
    } else {
        None
    };
    match hint {
        Some(hint) => format!("{hint} ({error})"),
        None => error.to_owned(),
    }
}

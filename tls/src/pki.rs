//! A fleet CA and the role certificates it issues (rcgen, ECDSA P-256).

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::identity::{Identity, Role};
use crate::{COORDINATOR_NAME, Error, Result};

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From a minute ago (clocks differ a little) for `days`.
    pub fn days(days: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(u64::from(days) * 86_400),
        }
    }
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate authority: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA named `name`, valid for `validity`.
    pub fn create(name: &str, validity: Validity) -> Result<(Self, Issued)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.distinguished_name.push(DnType::OrganizationName, "Skiff");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.self_signed(&key)?;
        let issued = Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
        Ok((Self { cert_pem: issued.cert_pem.clone(), issuer: Issuer::new(params, key) }, issued))
    }

    /// The CA in `cert_pem` with its key `key_pem`.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::Invalid(format!("CA key: {e}")))?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| Error::Invalid(format!("CA certificate: {e}")))?;
        Ok(Self { cert_pem: cert_pem.to_owned(), issuer })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for `identity` with a fresh key. Coordinators and etcd members also get the
    /// `hosts` (DNS names or IP addresses) they are dialed at; a coordinator always carries
    /// [`COORDINATOR_NAME`].
    pub fn issue(&self, identity: &Identity, hosts: &[String], validity: Validity) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, identity.to_string());
        params.distinguished_name.push(DnType::OrganizationName, "Skiff");
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.use_authority_key_identifier_extension = true;
        let uri = identity.uri().try_into().map_err(|e| Error::Invalid(format!("{}: {e}", identity.uri())))?;
        params.subject_alt_names.push(SanType::URI(uri));
        let server = matches!(identity.role, Role::Coordinator | Role::Etcd);
        if !server && !hosts.is_empty() {
            return Err(Error::Invalid(format!(
                "host names go in coordinator and etcd certificates, not in {} certificate",
                identity.role.with_article()
            )));
        }
        let mut names: Vec<String> = hosts.to_vec();
        if identity.role == Role::Coordinator {
            names.insert(0, COORDINATOR_NAME.to_owned());
        }
        for host in names {
            let san = match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    host.clone().try_into().map_err(|e| Error::Invalid(format!("host {host:?}: {e}")))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        // Coordinators and etcd members serve and also dial (peers, etcd); agents and clients only dial.
        params.extended_key_usages = if server {
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_name_their_identity() {
        let (ca, issued) = Ca::create("test", Validity::days(1)).unwrap();
        let again = Ca::load(&issued.cert_pem, &issued.key_pem).unwrap();
        for (identity, hosts) in [
            (Identity::coordinator(), vec!["10.0.0.1".to_string(), "c1.example".into()]),
            (Identity::agent("a1").unwrap(), vec![]),
            (Identity::client("ops").unwrap(), vec![]),
        ] {
            for ca in [&ca, &again] {
                let cert = ca.issue(&identity, &hosts, Validity::days(1)).unwrap();
                let der = crate::files::pem_certs(cert.cert_pem.as_bytes()).unwrap().remove(0);
                assert_eq!(Identity::from_der(&der).unwrap(), identity);
            }
        }
        let err = ca.issue(&Identity::agent("a1").unwrap(), &["h".into()], Validity::days(1)).unwrap_err();
        assert!(err.to_string().contains("not in an agent certificate"), "{err}");
    }
}

//! The certificates of a secured stack, made with OpenSSL: one CA, and per node a certificate
//! for every name it answers to (`127.0.0.<n>`, `localhost`), its key (unencrypted PKCS#8) and
//! the chain in one PEM file, which Kafka (`ssl.keystore.type=PEM`) and Cassandra
//! (`PEMBasedSslContextFactory`) both read. A second, unrelated CA exists for the tests of an
//! untrusted certificate. Nothing here is committed: it lives under the stack's `tls/`.

use std::{fs, net::Ipv4Addr, path::Path};

use anyhow::Context as _;
use openssl::{
    asn1::Asn1Time,
    bn::{BigNum, MsbOption},
    hash::MessageDigest,
    pkey::{PKey, Private},
    rsa::Rsa,
    x509::{
        X509, X509NameBuilder,
        extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName},
    },
};

/// Days a generated certificate is valid.
const VALID_DAYS: u32 = 825;

fn key() -> anyhow::Result<PKey<Private>> {
    Ok(PKey::from_rsa(Rsa::generate(2048)?)?)
}

fn serial() -> anyhow::Result<openssl::asn1::Asn1Integer> {
    let mut bn = BigNum::new()?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)?;
    Ok(bn.to_asn1_integer()?)
}

fn name(cn: &str) -> anyhow::Result<openssl::x509::X509Name> {
    let mut n = X509NameBuilder::new()?;
    n.append_entry_by_text("O", "ip-log-pipeline local stack")?;
    n.append_entry_by_text("CN", cn)?;
    Ok(n.build())
}

/// A CA: its certificate and key.
pub struct Ca {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Ca {
    pub fn new(cn: &str) -> anyhow::Result<Self> {
        let key = key()?;
        let mut b = X509::builder()?;
        b.set_version(2)?;
        let serial = serial()?;
        b.set_serial_number(&serial)?;
        let n = name(cn)?;
        b.set_subject_name(&n)?;
        b.set_issuer_name(&n)?;
        b.set_pubkey(&key)?;
        b.set_not_before(&*Asn1Time::days_from_now(0)?)?;
        b.set_not_after(&*Asn1Time::days_from_now(VALID_DAYS)?)?;
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok(Self {
            cert: b.build(),
            key,
        })
    }

    /// A server (and client: nodes authenticate each other) certificate named `cn`, valid for
    /// `ips` and `localhost`; returns key + certificate + CA as one PEM.
    pub fn issue(&self, cn: &str, ips: &[Ipv4Addr]) -> anyhow::Result<Vec<u8>> {
        let key = key()?;
        let mut b = X509::builder()?;
        b.set_version(2)?;
        let serial = serial()?;
        b.set_serial_number(&serial)?;
        let subject = name(cn)?;
        b.set_subject_name(&subject)?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.set_pubkey(&key)?;
        b.set_not_before(&*Asn1Time::days_from_now(0)?)?;
        b.set_not_after(&*Asn1Time::days_from_now(VALID_DAYS)?)?;
        let mut san = SubjectAlternativeName::new();
        san.dns("localhost");
        for ip in ips {
            san.ip(&ip.to_string());
        }
        let san = san.build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(san)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()?,
        )?;
        b.append_extension(
            ExtendedKeyUsage::new()
                .server_auth()
                .client_auth()
                .build()?,
        )?;
        b.sign(&self.key, MessageDigest::sha256())?;
        let cert = b.build();
        let mut pem = key.private_key_to_pem_pkcs8()?;
        pem.extend(cert.to_pem()?);
        pem.extend(self.cert.to_pem()?);
        Ok(pem)
    }
}

/// Writes `ca.pem`, `node<n>.pem` for nodes 1..=nodes (every node's certificate names all
/// three loopback addresses, so a node keeps its certificate whichever address it takes) and
/// `untrusted-ca.pem` into `dir`, unless `ca.pem` is there already.
pub fn ensure(dir: &Path, nodes: u8) -> anyhow::Result<()> {
    if dir.join("ca.pem").is_file() {
        return Ok(());
    }
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let ca = Ca::new("ip-log-pipeline local CA")?;
    let ips: Vec<Ipv4Addr> = (1..=3).map(|n| Ipv4Addr::new(127, 0, 0, n)).collect();
    for node in 1..=nodes {
        // One CN for every node: Kafka maps it to the principal `User:kafka-node` of the
        // controller listener (mutual TLS), a super user.
        let pem = ca.issue(super::NODE_CN, &ips)?;
        write_private(&dir.join(format!("node{node}.pem")), &pem)?;
    }
    let other = Ca::new("some other CA")?;
    fs::write(dir.join("untrusted-ca.pem"), other.cert.to_pem()?)?;
    // Last: its presence means the rest is complete.
    fs::write(dir.join("ca.pem"), ca.cert.to_pem()?)?;
    Ok(())
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

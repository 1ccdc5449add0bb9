//! RSA key and X.509 certificate parsing shared by the RSA-signing channels (Alipay, UnionPay):
//! the key formats the channels' consoles hand out (channels.md §1.5, §5).

use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::{RsaPrivateKey, RsaPublicKey};
use x509_parser::prelude::X509Certificate;

/// Parses an RSA public key: PEM `PUBLIC KEY` (SPKI), PEM `RSA PUBLIC KEY` (PKCS#1), or the bare
/// base64 SPKI the Alipay console shows (§1.5).
pub(crate) fn parse_rsa_public_key(bytes: &[u8]) -> Result<RsaPublicKey, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| "public key is not text".to_string())?
        .trim();
    let der = if text.starts_with("-----BEGIN") {
        let block = pem::parse(text).map_err(|_| "public key PEM does not parse".to_string())?;
        if block.tag() == "RSA PUBLIC KEY" {
            return RsaPublicKey::from_pkcs1_der(block.contents())
                .map_err(|_| "RSA PUBLIC KEY is not a PKCS#1 RSA key".to_string());
        }
        block.into_contents()
    } else {
        let compact: String = text.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| "public key is neither PEM nor base64".to_string())?
    };
    RsaPublicKey::from_public_key_der(&der).map_err(|_| "public key is not an RSA SubjectPublicKeyInfo".to_string())
}

/// Parses a PEM (PKCS#8 or PKCS#1) RSA private key; for `simulate` only.
pub(crate) fn parse_rsa_private_key(pem_text: &str) -> Result<RsaPrivateKey, String> {
    let text = pem_text.trim();
    RsaPrivateKey::from_pkcs8_pem(text)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(text))
        .map_err(|_| "private key is not a PKCS#8 or PKCS#1 RSA PEM".to_string())
}

/// The DER of every certificate in a PEM bundle (or the input itself when it is DER).
pub(crate) fn certificate_ders(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if bytes.first() == Some(&0x30) {
        return Ok(vec![bytes.to_vec()]);
    }
    let blocks = pem::parse_many(bytes).map_err(|_| "certificate PEM does not parse".to_string())?;
    let ders: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if ders.is_empty() {
        return Err("no CERTIFICATE block found".to_string());
    }
    Ok(ders)
}

/// The RSA key of a parsed certificate.
pub(crate) fn certificate_rsa_key(cert: &X509Certificate<'_>) -> Result<RsaPublicKey, String> {
    RsaPublicKey::from_public_key_der(cert.public_key().raw)
        .map_err(|_| "certificate does not hold an RSA public key".to_string())
}

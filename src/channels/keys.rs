//! RSA keys and X.509 certificate parsing shared by the RSA-signing channels (Alipay, WeChat Pay
//! v3, UnionPay): the key formats the channels' consoles hand out.
//!
//! Keys are parsed once, when a config is built (or when UnionPay's signing certificate is first
//! trusted), into an [`RsaVerifyingKey`] prepared for one signature scheme, so verifying a
//! notification parses no key. The RSA arithmetic is AWS-LC's (aws-lc-rs): verification at
//! OpenSSL's speed, and constant-time private-key operations for the simulators' signing.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, ParsedPublicKey, RsaKeyPair, RsaParameters};
use base64::Engine as _;
use x509_parser::prelude::X509Certificate;

/// An RSA PKCS#1 v1.5 signature scheme a channel verifies, with the smallest key it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RsaScheme {
    /// SHA256withRSA, keys of 2048 bits or more: Alipay RSA2, WeChat Pay v3, UnionPay 5.1.0,
    /// `sha256WithRSAEncryption` certificates.
    Sha256,
    /// SHA384withRSA, 2048 bits or more (certificate signatures).
    Sha384,
    /// SHA512withRSA, 2048 bits or more (certificate signatures).
    Sha512,
    /// SHA1withRSA, keys of 1024 bits or more: Alipay legacy `RSA`, whose keys are often 1024-bit,
    /// and `sha1WithRSAEncryption` certificates.
    Sha1Legacy,
}

impl RsaScheme {
    /// The scheme of an X.509 `signatureAlgorithm` OID, if it is RSA PKCS#1 v1.5 with a digest
    /// this crate verifies.
    pub(crate) fn from_x509_signature_oid(oid: &str) -> Option<Self> {
        match oid {
            "1.2.840.113549.1.1.11" => Some(Self::Sha256),
            "1.2.840.113549.1.1.12" => Some(Self::Sha384),
            "1.2.840.113549.1.1.13" => Some(Self::Sha512),
            "1.2.840.113549.1.1.5" => Some(Self::Sha1Legacy),
            _ => None,
        }
    }

    /// The smallest modulus, in bits, this scheme accepts.
    pub(crate) fn min_bits(self) -> usize {
        match self {
            Self::Sha1Legacy => 1024,
            Self::Sha256 | Self::Sha384 | Self::Sha512 => 2048,
        }
    }

    /// The aws-lc-rs algorithm; its key-size range starts at [`Self::min_bits`].
    fn parameters(self) -> &'static RsaParameters {
        match self {
            Self::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Self::Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Self::Sha1Legacy => &signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
        }
    }
}

impl fmt::Display for RsaScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sha256 => "SHA256withRSA",
            Self::Sha384 => "SHA384withRSA",
            Self::Sha512 => "SHA512withRSA",
            Self::Sha1Legacy => "SHA1withRSA",
        })
    }
}

/// Why a configured RSA key is refused. Messages describe the key, never its bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RsaKeyError {
    /// Not an RSA key in any accepted encoding.
    #[error("{0}")]
    Format(&'static str),
    /// A well-formed RSA key smaller than the scheme accepts.
    #[error("RSA key has {bits} bits, {scheme} needs at least {}", scheme.min_bits())]
    TooSmall {
        /// The key's modulus size.
        bits: usize,
        /// The scheme it was configured for.
        scheme: RsaScheme,
    },
}

/// An RSA public key, parsed and size-checked once, prepared to verify one [`RsaScheme`].
#[derive(Clone)]
pub(crate) struct RsaVerifyingKey {
    key: ParsedPublicKey,
    scheme: RsaScheme,
    bits: usize,
}

impl fmt::Debug for RsaVerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaVerifyingKey")
            .field("scheme", &self.scheme)
            .field("bits", &self.bits)
            .finish()
    }
}

impl RsaVerifyingKey {
    /// Parses a DER PKCS#1 `RSAPublicKey` or X.509 `SubjectPublicKeyInfo` for `scheme`, refusing
    /// keys smaller than the scheme accepts.
    pub(crate) fn from_der(der: &[u8], scheme: RsaScheme) -> Result<Self, RsaKeyError> {
        let not_rsa = RsaKeyError::Format("holds no RSA public key (SubjectPublicKeyInfo or PKCS#1)");
        // Both parsers accept PKCS#1 and SPKI; the first only to read the modulus size, which
        // `ParsedPublicKey` does not expose.
        let modulus_der = aws_lc_rs::rsa::PublicKey::from_der(der).map_err(|_| not_rsa.clone())?;
        let modulus = modulus_der.modulus().big_endian_without_leading_zero();
        let bits = match modulus.first() {
            Some(top) => modulus.len() * 8 - top.leading_zeros() as usize,
            None => 0,
        };
        if bits < scheme.min_bits() {
            return Err(RsaKeyError::TooSmall { bits, scheme });
        }
        let key = ParsedPublicKey::new(scheme.parameters(), der).map_err(|_| not_rsa)?;
        Ok(Self { key, scheme, bits })
    }

    /// The scheme this key verifies.
    pub(crate) fn scheme(&self) -> RsaScheme {
        self.scheme
    }

    /// True when `signature` is this key's PKCS#1 v1.5 signature of `message` under its scheme
    /// (the scheme's digest of `message` is computed here).
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }
}

/// Parses an RSA public key for `scheme`: PEM `PUBLIC KEY` (SPKI), PEM `RSA PUBLIC KEY` (PKCS#1),
/// or the bare base64 the Alipay console shows, line breaks allowed.
pub(crate) fn parse_rsa_public_key(bytes: &[u8], scheme: RsaScheme) -> Result<RsaVerifyingKey, RsaKeyError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| RsaKeyError::Format("public key is not text"))?
        .trim();
    let der = if text.starts_with("-----BEGIN") {
        pem::parse(text)
            .map_err(|_| RsaKeyError::Format("public key PEM does not parse"))?
            .into_contents()
    } else {
        let compact: String = text.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| RsaKeyError::Format("public key is neither PEM nor base64"))?
    };
    RsaVerifyingKey::from_der(&der, scheme)
}

/// The RSA key of a parsed certificate, for `scheme`.
pub(crate) fn certificate_rsa_key(
    cert: &X509Certificate<'_>,
    scheme: RsaScheme,
) -> Result<RsaVerifyingKey, RsaKeyError> {
    RsaVerifyingKey::from_der(cert.public_key().raw, scheme)
}

/// An RSA private key that signs SHA256withRSA: the simulators' stand-in for a channel's key
/// (`payguard simulate`, the demo, tests). AWS-LC's private-key operation is constant-time.
pub(crate) struct RsaSigningKey(RsaKeyPair);

impl RsaSigningKey {
    /// Parses a PEM `PRIVATE KEY` (PKCS#8) or `RSA PRIVATE KEY` (PKCS#1) of 2048 bits or more.
    pub(crate) fn from_pem(pem_text: &str) -> Result<Self, String> {
        let refused = || "private key is not a PKCS#8 or PKCS#1 RSA PEM of 2048 bits or more".to_string();
        let block = pem::parse(pem_text.trim()).map_err(|_| refused())?;
        let pair = match block.tag() {
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(block.contents()),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(block.contents()),
            _ => return Err(refused()),
        };
        pair.map(Self).map_err(|_| refused())
    }

    /// The PKCS#1 v1.5 SHA-256 signature of `message`.
    pub(crate) fn sign_sha256(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let mut signature = vec![0; self.0.public_modulus_len()];
        // aws-lc-rs ignores the generator (PKCS#1 v1.5 is deterministic); its API asks for one.
        self.0
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| "RSA signing failed".to_string())?;
        Ok(signature)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    fn fixture(rel: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{rel}")).expect("fixture")
    }

    /// The base64 body of a PEM file, armour removed, line breaks kept.
    fn pem_body(pem_text: &str) -> String {
        pem_text
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn public_key_in_every_accepted_form_verifies_a_signature_of_its_private_key() {
        let message = b"app_id=2021000000000001&out_trade_no=ORDER-1";
        let signature = RsaSigningKey::from_pem(&fixture("alipay/app_private_key.pem"))
            .unwrap()
            .sign_sha256(message)
            .unwrap();
        let spki_pem = fixture("alipay/app_public_key.pem");
        let one_line: String = pem_body(&spki_pem).split_whitespace().collect();
        for (form, text) in [
            ("SPKI PEM", spki_pem.clone()),
            ("PKCS#1 PEM", fixture("alipay/app_public_key_pkcs1.pem")),
            ("bare base64 SPKI, one line", one_line),
            ("bare base64 SPKI, wrapped", pem_body(&spki_pem)),
        ] {
            let key =
                parse_rsa_public_key(text.as_bytes(), RsaScheme::Sha256).unwrap_or_else(|e| panic!("{form}: {e}"));
            assert_eq!(key.scheme(), RsaScheme::Sha256);
            assert!(key.verifies(message, &signature), "{form}");
            assert!(
                !key.verifies(b"app_id=2021000000000001&out_trade_no=ORDER-2", &signature),
                "{form}"
            );
        }
    }

    #[test]
    fn pkcs8_and_pkcs1_private_keys_sign_what_their_public_keys_verify() {
        for (private, public) in [
            (
                "wechatpay_v3/simulate_platform_private_key.pem",
                "wechatpay_v3/simulate_platform_public_key.pem",
            ),
            ("alipay/app_private_key.pem", "alipay/app_public_key.pem"),
            ("unionpay/leaf.key.pem", "unionpay/leaf.pem"),
        ] {
            let signature = RsaSigningKey::from_pem(&fixture(private))
                .unwrap_or_else(|e| panic!("{private}: {e}"))
                .sign_sha256(b"message")
                .unwrap();
            assert_eq!(signature.len(), 256, "{private}: RSA-2048");
            let public_text = fixture(public);
            let key = if public.ends_with("leaf.pem") {
                let der = certificate_ders(public_text.as_bytes()).unwrap().remove(0);
                let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
                certificate_rsa_key(&cert, RsaScheme::Sha256).unwrap()
            } else {
                parse_rsa_public_key(public_text.as_bytes(), RsaScheme::Sha256).unwrap()
            };
            assert!(key.verifies(b"message", &signature), "{private}");
        }
    }

    #[test]
    fn sha256_refuses_a_1024_bit_key_that_legacy_sha1_accepts() {
        let weak = fixture("alipay/legacy_rsa1024_public_key.pem");
        assert_eq!(
            parse_rsa_public_key(weak.as_bytes(), RsaScheme::Sha256).unwrap_err(),
            RsaKeyError::TooSmall {
                bits: 1024,
                scheme: RsaScheme::Sha256
            }
        );
        let err = parse_rsa_public_key(weak.as_bytes(), RsaScheme::Sha384).unwrap_err();
        assert_eq!(
            err.to_string(),
            "RSA key has 1024 bits, SHA384withRSA needs at least 2048"
        );
        let legacy = parse_rsa_public_key(weak.as_bytes(), RsaScheme::Sha1Legacy).unwrap();
        assert_eq!(legacy.scheme(), RsaScheme::Sha1Legacy);
    }

    #[test]
    fn keys_of_other_shapes_are_refused_without_echoing_them() {
        let private_pem = fixture("alipay/app_private_key.pem");
        let not_keys: [(&str, &[u8]); 5] = [
            ("binary", &[0xff, 0xfe, 0x00]),
            ("not base64", b"SECRETVALUE not a key!"),
            ("base64 of nothing RSA", b"U0VDUkVUVkFMVUU="),
            ("broken PEM", b"-----BEGIN PUBLIC KEY-----\nSECRETVALUE"),
            ("a private key", private_pem.as_bytes()),
        ];
        for (what, bytes) in not_keys {
            match parse_rsa_public_key(bytes, RsaScheme::Sha256) {
                Err(RsaKeyError::Format(message)) => {
                    assert!(!message.contains("SECRETVALUE"), "{what}: {message}");
                    assert!(!message.contains("MII"), "{what}: {message}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        let public_pem = fixture("alipay/app_public_key.pem");
        for pem_text in [
            public_pem.as_str(),
            "-----BEGIN PRIVATE KEY-----\nU0VDUkVUVkFMVUU=\n-----END PRIVATE KEY-----",
        ] {
            let err = RsaSigningKey::from_pem(pem_text).err().expect("refused");
            assert!(!err.contains("SECRETVALUE") && !err.contains("MII"), "{err}");
        }
    }

    #[test]
    fn certificate_signature_oids_map_to_schemes() {
        for (oid, scheme) in [
            ("1.2.840.113549.1.1.11", Some(RsaScheme::Sha256)),
            ("1.2.840.113549.1.1.12", Some(RsaScheme::Sha384)),
            ("1.2.840.113549.1.1.13", Some(RsaScheme::Sha512)),
            ("1.2.840.113549.1.1.5", Some(RsaScheme::Sha1Legacy)),
            // MD5 with RSA, RSASSA-PSS and SM2-with-SM3 are not verified.
            ("1.2.840.113549.1.1.4", None),
            ("1.2.840.113549.1.1.10", None),
            ("1.2.156.10197.1.501", None),
        ] {
            assert_eq!(RsaScheme::from_x509_signature_oid(oid), scheme, "{oid}");
        }
    }

    #[test]
    fn debug_output_names_scheme_and_size_only() {
        let key = parse_rsa_public_key(fixture("alipay/app_public_key.pem").as_bytes(), RsaScheme::Sha256).unwrap();
        assert_eq!(format!("{key:?}"), "RsaVerifyingKey { scheme: Sha256, bits: 2048 }");
    }
}

//! WeChat Pay API v3 callbacks: RSA-SHA256 signature over
//! `timestamp\nnonce\nbody\n`, key chosen by `Wechatpay-Serial` (platform certificate serial or
//! `PUB_KEY_ID_…`), a freshness window, and an AEAD_AES_256_GCM-encrypted `resource` holding the
//! transaction or refund.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use jiff::Timestamp;
use rand::distr::{Alphanumeric, SampleString};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::amount::integer_minor_at;
use super::keys::{certificate_rsa_key, parse_rsa_public_key, RsaScheme, RsaSigningKey, RsaVerifyingKey};
use super::{
    fixture_ref, read_fixture, ChannelSetup, SimulateInput, TestSetup,     required_header, single_header, Ack, Channel, ChannelError, ChannelKind, EventKind, MerchantRef, NotifyRequest,
    RefundInfo, SimulateKeys, SimulateSpec, SimulatedNotification, VerifiedEvent,
};
use crate::secret::{Secret, SecretRef};
use crate::issue::ConfigIssue;

/// The only signature type this channel speaks; an absent header means this value.
const SIGNATURE_TYPE: &str = "WECHATPAY2-SHA256-RSA2048";
/// Prefix of WeChat Pay's deliberate bad-signature probes.
const PROBE_PREFIX: &str = "WECHATPAY/SIGNTEST/";
/// Prefix of WeChat Pay public-key ids sent in `Wechatpay-Serial`.
const PUBLIC_KEY_ID_PREFIX: &str = "PUB_KEY_ID_";
/// The only resource algorithm.
const RESOURCE_ALGORITHM: &str = "AEAD_AES_256_GCM";
/// `WECHATPAY2-SHA256-RSA2048`: SHA256withRSA, whose keys are refused below 2048 bits at load time.
const SCHEME: RsaScheme = RsaScheme::Sha256;

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}

/// WeChat Pay API v3 notification channel for one merchant.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WechatpayV3Config {
    /// Merchant id (`mchid`, or `sp_mchid` in partner mode) every notification must be addressed to.
    pub(crate) mchid: String,
    /// App id payment notifications must carry (`appid`/`sp_appid`); not checked when unset.
    /// Refund notifications carry no app id and are not checked against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) appid: Option<String>,
    /// APIv3 key: 32 ASCII characters, used as raw bytes for AES-256-GCM.
    pub(crate) api_v3_key: SecretRef,
    /// Platform certificates (PEM, one or several per source), selected by their serial. Several
    /// may be live during rotation. An entry may pin the serial explicitly with
    /// `{serial, certificate}` when the announced serial is not the certificate's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) platform_certificates: Vec<PlatformCertificate>,
    /// WeChat Pay public-key id (`PUB_KEY_ID_…`) for public-key mode; needs `public_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) public_key_id: Option<String>,
    /// WeChat Pay public key (PEM SubjectPublicKeyInfo) for public-key mode; needs `public_key_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) public_key: Option<SecretRef>,
    /// Largest accepted distance between `Wechatpay-Timestamp` and now (exclusive), e.g. "300s".
    #[serde(default = "default_tolerance", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) tolerance: Duration,
    /// Set by a merchant account that downloads its platform certificates: it may then start
    /// with none configured.
    #[serde(skip)]
    #[schemars(skip)]
    pub(crate) keys_downloaded: bool,
}

/// One configured platform certificate.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum PlatformCertificate {
    /// PEM certificate(s), each selected by its own serial number.
    Pem(SecretRef),
    /// One PEM certificate announced under an explicit serial.
    Pinned(PinnedCertificate),
}

/// A platform certificate with an explicit `Wechatpay-Serial`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PinnedCertificate {
    /// Serial as sent in `Wechatpay-Serial` (hex, case and leading zeros do not matter).
    pub(crate) serial: String,
    /// The PEM certificate.
    pub(crate) certificate: SecretRef,
}

impl WechatpayV3Config {
    /// Resolves secrets and parses keys and certificates. Every problem is reported with its key
    /// path; messages name sources, never secret values.
    pub fn build(&self) -> Result<WechatpayV3, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        if self.mchid.trim().is_empty() {
            issues.push(ConfigIssue::new("mchid", "must not be empty"));
        }
        let api_v3_key = match self.api_v3_key.resolve() {
            // Production APIv3 keys are exactly 32 characters (AES-256).
            Ok(key) if key.expose().len() == 32 => Some(key),
            Ok(key) => {
                let len = key.expose().len();
                issues.push(ConfigIssue::new(
                    "api_v3_key",
                    format!("must be 32 bytes, {} has {len}", self.api_v3_key.describe()),
                ));
                None
            }
            Err(e) => {
                issues.push(ConfigIssue::new("api_v3_key", e));
                None
            }
        };
        let mut platform_keys = Vec::new();
        for (i, entry) in self.platform_certificates.iter().enumerate() {
            let path = format!("platform_certificates[{i}]");
            match load_platform_certificate(entry) {
                Ok(keys) => platform_keys.extend(keys),
                Err(e) => issues.push(ConfigIssue::new(path, e)),
            }
        }
        let public_key = match (&self.public_key_id, &self.public_key) {
            (None, None) => None,
            (Some(id), Some(source)) => {
                if !id.starts_with(PUBLIC_KEY_ID_PREFIX) {
                    issues.push(ConfigIssue::new(
                        "public_key_id",
                        format!("must start with {PUBLIC_KEY_ID_PREFIX}"),
                    ));
                }
                match source
                    .resolve()
                    .and_then(|s| parse_rsa_public_key(s.expose(), SCHEME).map_err(|e| e.to_string()))
                {
                    Ok(key) => Some((id.clone(), key)),
                    Err(e) => {
                        issues.push(ConfigIssue::new("public_key", e));
                        None
                    }
                }
            }
            (Some(_), None) => {
                issues.push(ConfigIssue::new("public_key", "required when public_key_id is set"));
                None
            }
            (None, Some(_)) => {
                issues.push(ConfigIssue::new("public_key_id", "required when public_key is set"));
                None
            }
        };
        if self.platform_certificates.is_empty()
            && public_key.is_none()
            && self.public_key_id.is_none()
            && !self.keys_downloaded
        {
            issues.push(ConfigIssue::new(
                "platform_certificates",
                "configure platform_certificates, or public_key_id with public_key, or both",
            ));
        }
        if self.tolerance.is_zero() {
            issues.push(ConfigIssue::new("tolerance", "must be greater than zero"));
        }
        match api_v3_key {
            Some(api_v3_key) if issues.is_empty() => Ok(WechatpayV3 {
                mchid: self.mchid.clone(),
                appid: self.appid.clone(),
                api_v3_key,
                platform_keys,
                downloaded: platform_keyring(&self.mchid),
                public_key,
                tolerance_secs: i64::try_from(self.tolerance.as_secs()).unwrap_or(i64::MAX),
            }),
            _ => Err(issues),
        }
    }
}

/// A platform certificate's key, indexed by normalized serial.
#[derive(Clone)]
pub(crate) struct PlatformKey {
    serial: String,
    key: RsaVerifyingKey,
    not_before: i64,
    not_after: i64,
}

impl fmt::Debug for PlatformKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformKey")
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl PlatformKey {
    /// The normalized serial (upper-case hex, no leading zeros).
    pub(crate) fn serial(&self) -> &str {
        &self.serial
    }

    /// The end of the certificate's validity, in Unix seconds.
    pub(crate) fn not_after(&self) -> i64 {
        self.not_after
    }
}

/// The platform keys payguard downloaded for one merchant (`GET /v3/certificates`), shared by
/// every verifier of that `mchid` in the process: notify routes and egress answers alike, and
/// kept across configuration reloads. Keys configured in `platform_certificates` are looked up
/// first; these come after.
#[derive(Default)]
pub(crate) struct Keyring {
    keys: RwLock<Arc<Vec<PlatformKey>>>,
    /// Set when a notification or an answer named a serial nobody knows.
    wanted: AtomicBool,
}

/// Woken when any keyring is wanted.
static ANY_WANTED: LazyLock<tokio::sync::Notify> = LazyLock::new(tokio::sync::Notify::new);

/// Resolves when some verifier met an unknown platform serial (or once for such a signal given
/// before the call).
pub(crate) async fn any_keyring_wanted() {
    ANY_WANTED.notified().await;
}

impl Keyring {
    fn find(&self, serial: &str) -> Option<PlatformKey> {
        let keys = self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.iter().find(|k| k.serial == serial).cloned()
    }

    /// Adds `found`, replacing keys of the same serial; returns the serials that were new.
    pub(crate) fn add(&self, found: &[PlatformKey]) -> Vec<String> {
        let mut keys = self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next: Vec<PlatformKey> = keys.as_ref().clone();
        let mut added = Vec::new();
        for key in found {
            match next.iter_mut().find(|k| k.serial == key.serial) {
                Some(old) => *old = key.clone(),
                None => {
                    added.push(key.serial.clone());
                    next.push(key.clone());
                }
            }
        }
        *keys = Arc::new(next);
        added
    }

    /// The serials held.
    pub(crate) fn serials(&self) -> Vec<String> {
        let keys = self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.iter().map(|k| k.serial.clone()).collect()
    }

    /// How many keys are held, and the soonest end of validity among them (Unix seconds).
    pub(crate) fn summary(&self) -> (usize, Option<i64>) {
        let keys = self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        (keys.len(), keys.iter().map(|k| k.not_after).min())
    }

    /// Notes that a verifier met a serial nobody knows.
    fn want(&self) {
        self.wanted.store(true, Ordering::Relaxed);
        ANY_WANTED.notify_one();
    }

    /// Whether a serial nobody knew was met since the last call.
    pub(crate) fn take_wanted(&self) -> bool {
        self.wanted.swap(false, Ordering::Relaxed)
    }
}

/// The keyring of `mchid`, made empty on first use.
pub(crate) fn platform_keyring(mchid: &str) -> Arc<Keyring> {
    static KEYRINGS: LazyLock<Mutex<HashMap<String, Arc<Keyring>>>> = LazyLock::new(Default::default);
    let mut rings = KEYRINGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    rings.entry(mchid.to_string()).or_default().clone()
}

/// A configured WeChat Pay v3 verifier.
#[derive(Clone)]
pub struct WechatpayV3 {
    mchid: String,
    appid: Option<String>,
    api_v3_key: Secret,
    platform_keys: Vec<PlatformKey>,
    /// Keys downloaded for this `mchid` (empty unless a merchant account downloads them).
    downloaded: Arc<Keyring>,
    public_key: Option<(String, RsaVerifyingKey)>,
    tolerance_secs: i64,
}

impl fmt::Debug for WechatpayV3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WechatpayV3")
            .field("mchid", &self.mchid)
            .field("appid", &self.appid)
            .field(
                "platform_serials",
                &self.platform_keys.iter().map(|k| &k.serial).collect::<Vec<_>>(),
            )
            .field("downloaded_serials", &self.downloaded.serials())
            .field("public_key_id", &self.public_key.as_ref().map(|(id, _)| id))
            .field("tolerance_secs", &self.tolerance_secs)
            .finish_non_exhaustive()
    }
}

const TEST_MCHID: &str = "1900000001";
const TEST_APPID: &str = "wx0000000000000001";
const TEST_API_V3_KEY: &str = "0123456789abcdef0123456789ABCDEF";
/// The serial the test platform certificate is announced under.
const TEST_SERIAL: &str = "7A3C0FFEE1234567890ABCDEF0123456789ABCDE";

impl ChannelSetup for WechatpayV3Config {
    const KIND: ChannelKind = ChannelKind::WechatpayV3;
    type Channel = WechatpayV3;
    const SIMULATE_NEEDS: &'static [(SimulateInput, &'static str)] = &[
        (SimulateInput::PrivateKey, ""),
        (SimulateInput::KeyIdOrCertificate, ""),
        (SimulateInput::ApiV3Key, ""),
    ];
    const EVENT_KINDS: &'static [EventKind] = EventKind::NORMALIZED;
    const SIGNATURE_HEADER: Option<&'static str> = Some("Wechatpay-Signature");
    const SIGNED_TIMESTAMP: bool = true;

    fn build(&self) -> Result<WechatpayV3, Vec<ConfigIssue>> {
        WechatpayV3Config::build(self)
    }

    fn simulate(spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
        simulate(spec, keys)
    }

    /// WeChat Pay v3 takes 200 or 204 as accepted.
    fn backend_acknowledged(status: u16, _body: &[u8]) -> bool {
        status == 200 || status == 204
    }

    fn test_setup(fixtures: &Path) -> Result<TestSetup, String> {
        Ok(TestSetup {
            config: serde_json::json!({
                "mchid": TEST_MCHID,
                "appid": TEST_APPID,
                "api_v3_key": TEST_API_V3_KEY,
                "platform_certificates": [fixture_ref(fixtures, "wechatpay_v3/simulate_platform_certificate.pem")],
            }),
            keys: SimulateKeys {
                private_key_pem: Some(read_fixture(fixtures, "wechatpay_v3/simulate_platform_private_key.pem")?),
                key_id: Some(TEST_SERIAL.into()),
                api_v3_key: Some(TEST_API_V3_KEY.as_bytes().to_vec()),
                ..SimulateKeys::default()
            },
            app_id: Some(TEST_APPID.into()),
            mch_id: Some(TEST_MCHID.into()),
        })
    }
}

impl Channel for WechatpayV3 {
    fn kind(&self) -> ChannelKind {
        ChannelKind::WechatpayV3
    }

    fn verify_signed(&self, req: &NotifyRequest<'_>, now: Timestamp) -> Result<VerifiedEvent, ChannelError> {
        self.verify_signature(req.headers, req.body, now)?;
        self.event_from_signed(req.body)
    }

    fn success_ack(&self) -> Ack {
        // 200 or 204, no body required.
        Ack {
            status: 204,
            content_type: None,
            body: Vec::new(),
        }
    }

    fn failure_ack(&self, reason: &str) -> Ack {
        failure_ack_with_status(500, reason)
    }

    /// signature, serial and timestamp failures → 401; a malformed body → 400; the rest
    /// (backend or store trouble) stays 500 so WeChat Pay retries.
    fn rejection_ack(&self, err: &ChannelError) -> Ack {
        let status = match err {
            ChannelError::Signature(_)
            | ChannelError::Stale(_)
            | ChannelError::UnknownKey(_)
            | ChannelError::Unsupported(_) => 401,
            ChannelError::Malformed(_)
            | ChannelError::Decrypt(_)
            | ChannelError::Business(_)
            | ChannelError::Amount(_) => 400,
        };
        failure_ack_with_status(status, err.ack_reason())
    }
}

impl WechatpayV3 {
    /// The `Wechatpay-Serial`, `-Signature`, `-Timestamp` and `-Nonce` headers over
    /// `timestamp\nnonce\nbody\n`: WeChat Pay signs its notifications and its answers to API
    /// calls alike, so the egress answers (`src/egress/wechatpay_v3.rs`) are verified here too.
    pub(crate) fn verify_signature(&self, headers: &http::HeaderMap, body: &[u8], now: Timestamp) -> Result<(), ChannelError> {
        self.verify_signature_with(headers, body, now, &[])
    }

    /// [`Self::verify_signature`], also trying `extra` keys: the certificates of a
    /// `/v3/certificates` answer, authenticated by their AEAD, sign that very answer.
    pub(crate) fn verify_signature_with(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: Timestamp,
        extra: &[PlatformKey],
    ) -> Result<(), ChannelError> {
        let serial = required_header(headers, "wechatpay-serial")?;
        let signature = required_header(headers, "wechatpay-signature")?;
        let timestamp = required_header(headers, "wechatpay-timestamp")?;
        let nonce = required_header(headers, "wechatpay-nonce")?;
        // Absent means RSA2048 (wechatpay-go default); SM2 and anything else are refused.
        if let Some(kind) = single_header(headers, "wechatpay-signature-type")? {
            if kind != SIGNATURE_TYPE {
                return Err(ChannelError::Unsupported(format!(
                    "Wechatpay-Signature-Type {kind:.40}"
                )));
            }
        }
        // The header text is signed as received; requiring 1-10 digits keeps it equal to
        // what the Go SDK re-formats with %d.
        if timestamp.is_empty() || timestamp.len() > 10 || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ChannelError::Malformed(
                "Wechatpay-Timestamp is not 1-10 decimal digits".into(),
            ));
        }
        let ts: i64 = timestamp
            .parse()
            .map_err(|_| ChannelError::Malformed("Wechatpay-Timestamp".into()))?;
        // Reject when |now - ts| >= window (wechatpay-go uses >= five minutes).
        if now.as_second().abs_diff(ts) >= self.tolerance_secs.unsigned_abs() {
            return Err(ChannelError::Stale(format!(
                "Wechatpay-Timestamp {ts} is outside the {}s window",
                self.tolerance_secs
            )));
        }
        if signature.starts_with(PROBE_PREFIX) {
            return Err(ChannelError::Signature(
                "signature probe (WECHATPAY/SIGNTEST/) rejected".into(),
            ));
        }
        let key = self.select_key(serial, now, extra)?;
        let sig_bytes = BASE64
            .decode(signature)
            .map_err(|_| ChannelError::Signature("Wechatpay-Signature is not base64".into()))?;
        let message = signed_message(timestamp, nonce, body);
        // A signature of the wrong length (truncated, padded) does not verify either.
        if !key.verifies(&message, &sig_bytes) {
            return Err(ChannelError::Signature("RSA-SHA256 signature does not verify".into()));
        }
        Ok(())
    }

    /// The keyring of downloaded keys this verifier consults.
    pub(crate) fn keyring(&self) -> &Arc<Keyring> {
        &self.downloaded
    }

    /// [`decrypt_certificates`] with this merchant's APIv3 key.
    pub(crate) fn decrypt_certificate_list(&self, body: &[u8]) -> Result<Vec<(String, PlatformKey)>, String> {
        decrypt_certificates(body, self.api_v3_key.expose())
    }

    /// Everything after the signature verified: the envelope, the resource decrypted with the
    /// APIv3 key, the event and the merchant checks.
    pub(crate) fn event_from_signed(&self, body: &[u8]) -> Result<VerifiedEvent, ChannelError> {
        let envelope: Envelope =
            serde_json::from_slice(body).map_err(|e| ChannelError::Malformed(format!("notification body: {e}")))?;
        let resource = &envelope.resource;
        if resource.algorithm != RESOURCE_ALGORITHM {
            return Err(ChannelError::Unsupported(format!(
                "resource.algorithm {:.40}",
                resource.algorithm
            )));
        }
        let aad = resource.associated_data.as_deref().unwrap_or("");
        let plaintext = decrypt_resource(
            self.api_v3_key.expose(),
            resource.nonce.as_bytes(),
            aad.as_bytes(),
            &resource.ciphertext,
        )?;
        // The resource is read as strictly as the envelope: a repeated key would mean one thing
        // to payguard (serde keeps the last) and maybe another to the backend.
        let object = match crate::canonical::json::parse_strict(&plaintext) {
            Ok(Some(object)) => object,
            Ok(None) => return Err(ChannelError::Malformed("decrypted resource is not JSON".into())),
            Err(e) => return Err(ChannelError::Malformed(format!("decrypted resource: {e}"))),
        };
        let event = normalize(&envelope, object)?;
        self.check_business(&event)?;
        Ok(event)
    }

    /// The event an order query answer (`GET /v3/pay/transactions/out-trade-no/…`, signature
    /// already verified) describes: the transaction object is the one a payment notification
    /// carries encrypted, so it normalizes to the same event with the same dedup key.
    /// `trade_state` `REFUND` means the order was paid (its refunds are events of their own).
    pub(crate) fn event_from_query(&self, body: &[u8]) -> Result<VerifiedEvent, ChannelError> {
        let object = match crate::canonical::json::parse_strict(body) {
            Ok(Some(object)) => object,
            Ok(None) => return Err(ChannelError::Malformed("the query answer is not JSON".into())),
            Err(e) => return Err(ChannelError::Malformed(format!("the query answer: {e}"))),
        };
        let mut event = normalize_object("TRANSACTION.QUERY", None, None, object)?;
        if event.raw_status.as_deref() == Some("REFUND") {
            event.kind = EventKind::PaymentSucceeded;
        }
        self.check_business(&event)?;
        Ok(event)
    }

    /// The event a refund object describes — one with the fields of a refund notification's
    /// resource, built from a verified bill row — with the dedup key of that notification.
    pub(crate) fn event_from_refund_object(&self, object: Value) -> Result<VerifiedEvent, ChannelError> {
        let event = normalize_object("REFUND.SUCCESS", None, None, object)?;
        self.check_business(&event)?;
        Ok(event)
    }

    /// The verifying key `Wechatpay-Serial` names: the public key when the serial is the
    /// configured `PUB_KEY_ID_…`, else the platform certificate with that serial, if it is
    /// valid at `now`.
    fn select_key(
        &self,
        serial: &str,
        now: Timestamp,
        extra: &[PlatformKey],
    ) -> Result<Cow<'_, RsaVerifyingKey>, ChannelError> {
        if let Some((id, key)) = &self.public_key {
            if serial == id {
                return Ok(Cow::Borrowed(key));
            }
        }
        if serial.starts_with(PUBLIC_KEY_ID_PREFIX) {
            return Err(ChannelError::UnknownKey(format!(
                "public key id {serial:.64} is not configured"
            )));
        }
        let wanted = normalize_serial(serial)
            .ok_or_else(|| ChannelError::Malformed("Wechatpay-Serial is neither hex nor PUB_KEY_ID_".into()))?;
        let found = match self.platform_keys.iter().find(|k| k.serial == wanted) {
            Some(k) => Cow::Borrowed(k),
            None => match self.downloaded.find(&wanted).or_else(|| extra.iter().find(|k| k.serial == wanted).cloned()) {
                Some(k) => Cow::Owned(k),
                None => {
                    // A serial nobody knows is what a channel rotation looks like: a merchant
                    // account that downloads certificates fetches them now.
                    self.downloaded.want();
                    return Err(ChannelError::UnknownKey(format!(
                        "platform certificate serial {wanted:.64} is not configured"
                    )));
                }
            },
        };
        let now = now.as_second();
        if now < found.not_before || now > found.not_after {
            return Err(ChannelError::UnknownKey(format!(
                "platform certificate {wanted} is not valid at this time"
            )));
        }
        Ok(match found {
            Cow::Borrowed(k) => Cow::Borrowed(&k.key),
            Cow::Owned(k) => Cow::Owned(k.key),
        })
    }

    /// the notification must be addressed to the configured merchant (and app).
    fn check_business(&self, event: &VerifiedEvent) -> Result<(), ChannelError> {
        let needs_ids = event.kind != EventKind::Other;
        match event.merchant.mch_id.as_deref() {
            Some(m) if m != self.mchid => {
                return Err(ChannelError::Business(format!(
                    "mchid {m:.32} is not the configured merchant"
                )))
            }
            None if needs_ids => return Err(ChannelError::Business("notification carries no mchid".into())),
            _ => {}
        }
        if let Some(appid) = &self.appid {
            match event.merchant.app_id.as_deref() {
                Some(a) if a != appid => {
                    return Err(ChannelError::Business(format!(
                        "appid {a:.32} is not the configured app"
                    )))
                }
                None if needs_ids && !event.kind.is_refund() => {
                    return Err(ChannelError::Business("payment notification carries no appid".into()))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// WeChat Pay v3 failure answer: `status` (4xx/5xx) with
/// `{"code":"FAIL","message":<reason>}`.
pub(crate) fn failure_ack_with_status(status: u16, reason: &str) -> Ack {
    let body = json!({"code": "FAIL", "message": reason}).to_string().into_bytes();
    Ack {
        status,
        content_type: Some("application/json"),
        body,
    }
}

/// The signed message: three LF-terminated lines, the body as raw bytes.
fn signed_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    for part in [timestamp.as_bytes(), nonce.as_bytes(), body] {
        message.extend_from_slice(part);
        message.push(b'\n');
    }
    message
}

/// Serial numbers compare as numbers: upper-case hex without leading zeros.
fn normalize_serial(serial: &str) -> Option<String> {
    if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = serial.trim_start_matches('0');
    Some(if trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_ascii_uppercase()
    })
}

fn load_platform_certificate(entry: &PlatformCertificate) -> Result<Vec<PlatformKey>, String> {
    let (source, pinned) = match entry {
        PlatformCertificate::Pem(source) => (source, None),
        PlatformCertificate::Pinned(p) => {
            let serial = normalize_serial(&p.serial).ok_or("serial must be hex")?;
            (&p.certificate, Some(serial))
        }
    };
    let secret = source.resolve()?;
    let mut keys = pem_platform_keys(secret.expose()).map_err(|e| format!("{} {e}", source.describe()))?;
    if let Some(serial) = pinned.clone() {
        for key in &mut keys {
            key.serial.clone_from(&serial);
        }
    }
    match keys.len() {
        0 => Err(format!("{} holds no PEM certificate", source.describe())),
        n if n > 1 && pinned.is_some() => Err("a pinned serial needs exactly one certificate".into()),
        _ => Ok(keys),
    }
}

/// The keys of the PEM certificates in `pem`, each under its own serial.
pub(crate) fn pem_platform_keys(pem: &[u8]) -> Result<Vec<PlatformKey>, String> {
    let mut keys = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let pem = pem.map_err(|_| "is not PEM".to_string())?;
        if pem.label != "CERTIFICATE" {
            continue;
        }
        let cert = pem
            .parse_x509()
            .map_err(|_| "holds an unparsable certificate".to_string())?;
        let key = certificate_rsa_key(&cert, SCHEME).map_err(|e| format!("holds a certificate {e}"))?;
        keys.push(PlatformKey {
            serial: normalize_serial(&hex::encode(cert.tbs_certificate.raw_serial())).unwrap_or_default(),
            key,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        });
    }
    Ok(keys)
}

/// `GET /v3/certificates`: the platform certificates, each encrypted with the APIv3 key.
#[derive(Deserialize, Serialize)]
struct CertificateList {
    data: Vec<CertificateEntry>,
}

#[derive(Deserialize, Serialize)]
struct CertificateEntry {
    serial_no: String,
    encrypt_certificate: Resource,
}

/// The certificates of a `GET /v3/certificates` answer, decrypted with the APIv3 key and
/// parsed, each with its entry still encrypted, as a one-entry list: that text is what the
/// store keeps, so a certificate read back from the store is authenticated by the APIv3 key
/// again and nobody who can write to the store can add a key. The AEAD authenticates each certificate: only WeChat Pay and
/// the merchant hold the APIv3 key. One entry that does not decrypt, parse, or carry the serial
/// it is listed under refuses the whole answer.
pub(crate) fn decrypt_certificates(body: &[u8], api_v3_key: &[u8]) -> Result<Vec<(String, PlatformKey)>, String> {
    let list: CertificateList =
        serde_json::from_slice(body).map_err(|e| format!("the certificate list is not the expected JSON: {e}"))?;
    if list.data.is_empty() {
        return Err("the certificate list is empty".into());
    }
    let mut out = Vec::with_capacity(list.data.len());
    for entry in list.data {
        let listed = normalize_serial(&entry.serial_no).ok_or("a listed serial_no is not hex")?;
        let c = &entry.encrypt_certificate;
        if c.algorithm != RESOURCE_ALGORITHM {
            return Err(format!("certificate {listed:.64}: algorithm {:.40}", c.algorithm));
        }
        let aad = c.associated_data.as_deref().unwrap_or("");
        let pem = decrypt_resource(api_v3_key, c.nonce.as_bytes(), aad.as_bytes(), &c.ciphertext)
            .map_err(|e| format!("certificate {listed:.64}: {e}"))?;
        let pem = String::from_utf8(pem).map_err(|_| format!("certificate {listed:.64} is not PEM text"))?;
        let mut keys = pem_platform_keys(pem.as_bytes()).map_err(|e| format!("certificate {listed:.64} {e}"))?;
        let key = match (keys.pop(), keys.is_empty()) {
            (Some(key), true) => key,
            _ => return Err(format!("certificate {listed:.64} is not one certificate")),
        };
        if key.serial != listed {
            return Err(format!("certificate listed as {listed:.64} has serial {:.64}", key.serial));
        }
        let sealed = serde_json::to_string(&CertificateList { data: vec![entry] })
            .map_err(|e| format!("certificate {listed:.64}: {e}"))?;
        out.push((sealed, key));
    }
    Ok(out)
}

/// Decrypts a `resource`: `ciphertext_b64` is base64 of ciphertext ‖ 16-byte tag, `key`
/// the APIv3 key's ASCII bytes (16, 24 or 32 bytes: the official vectors use 16-byte keys),
/// `nonce` the 12 ASCII bytes of `resource.nonce`, `associated_data` the AAD (may be empty).
pub fn decrypt_resource(
    key: &[u8],
    nonce: &[u8],
    associated_data: &[u8],
    ciphertext_b64: &str,
) -> Result<Vec<u8>, ChannelError> {
    let ciphertext = BASE64
        .decode(ciphertext_b64)
        .map_err(|_| ChannelError::Decrypt("resource.ciphertext is not base64".into()))?;
    aes_gcm_apply(
        key,
        nonce,
        Payload {
            msg: &ciphertext,
            aad: associated_data,
        },
        Direction::Decrypt,
    )
    .map_err(|e| ChannelError::Decrypt(e.into()))
}

/// Encrypts `plaintext` the way WeChat Pay does (the inverse of [`decrypt_resource`]), returning
/// base64 of ciphertext ‖ tag. Used by [`simulate`] and tests.
pub fn encrypt_resource(
    key: &[u8],
    nonce: &[u8],
    associated_data: &[u8],
    plaintext: &[u8],
) -> Result<String, ChannelError> {
    aes_gcm_apply(
        key,
        nonce,
        Payload {
            msg: plaintext,
            aad: associated_data,
        },
        Direction::Encrypt,
    )
    .map(|ct| BASE64.encode(ct))
    .map_err(|e| ChannelError::Decrypt(e.into()))
}

#[derive(Clone, Copy)]
enum Direction {
    Encrypt,
    Decrypt,
}

fn aes_gcm_apply(
    key: &[u8],
    nonce: &[u8],
    payload: Payload<'_, '_>,
    direction: Direction,
) -> Result<Vec<u8>, &'static str> {
    if nonce.len() != 12 {
        return Err("resource.nonce must be 12 bytes");
    }
    match key.len() {
        16 => gcm::<Aes128Gcm>(key, nonce, payload, direction),
        24 => gcm::<AesGcm<aes::Aes192, U12>>(key, nonce, payload, direction),
        32 => gcm::<Aes256Gcm>(key, nonce, payload, direction),
        _ => Err("APIv3 key must be 16, 24 or 32 bytes"),
    }
}

fn gcm<C>(key: &[u8], nonce: &[u8], payload: Payload<'_, '_>, direction: Direction) -> Result<Vec<u8>, &'static str>
where
    C: KeyInit + Aead + AeadCore<NonceSize = U12>,
{
    let cipher = C::new_from_slice(key).map_err(|_| "bad AES key length")?;
    // Length checked by the caller, so from_slice cannot panic.
    let nonce = aes_gcm::Nonce::<U12>::from_slice(nonce);
    match direction {
        Direction::Decrypt => cipher
            .decrypt(nonce, payload)
            .map_err(|_| "AES-GCM authentication failed"),
        Direction::Encrypt => cipher.encrypt(nonce, payload).map_err(|_| "AES-GCM encryption failed"),
    }
}

/// The notification envelope (only the fields used).
#[derive(Debug, Deserialize)]
struct Envelope {
    id: String,
    #[serde(default)]
    create_time: Option<String>,
    event_type: String,
    resource: Resource,
}

#[derive(Debug, Deserialize, Serialize)]
struct Resource {
    algorithm: String,
    ciphertext: String,
    nonce: String,
    #[serde(default)]
    associated_data: Option<String>,
}

fn str_at(object: &Value, pointer: &str) -> Option<String> {
    object.pointer(pointer).and_then(Value::as_str).map(str::to_owned)
}

/// Payment notifications: `TRANSACTION.SUCCESS`, and for other `TRANSACTION.*` the
/// `trade_state` decides.
fn payment_kind(event_type: &str, trade_state: Option<&str>) -> EventKind {
    if event_type == "TRANSACTION.SUCCESS" {
        return EventKind::PaymentSucceeded;
    }
    match trade_state {
        Some("SUCCESS") => EventKind::PaymentSucceeded,
        Some("NOTPAY" | "USERPAYING" | "ACCEPT") => EventKind::PaymentPending,
        Some("CLOSED" | "REVOKED") => EventKind::PaymentClosed,
        Some("PAYERROR") => EventKind::PaymentFailed,
        _ => EventKind::Other,
    }
}

/// Builds the normalized event from the envelope and the decrypted object.
fn normalize(envelope: &Envelope, object: Value) -> Result<VerifiedEvent, ChannelError> {
    normalize_object(
        &envelope.event_type,
        Some(envelope.id.clone()),
        envelope.create_time.clone(),
        object,
    )
}

/// Builds the normalized event from a transaction or refund object: `event_type` as the
/// notification names it (`TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, ...).
fn normalize_object(
    event_type: &str,
    notification_id: Option<String>,
    create_time: Option<String>,
    object: Value,
) -> Result<VerifiedEvent, ChannelError> {
    let is_payment = event_type.starts_with("TRANSACTION.");
    let kind = match event_type {
        "REFUND.SUCCESS" => EventKind::RefundSucceeded,
        "REFUND.CLOSED" => EventKind::RefundClosed,
        "REFUND.ABNORMAL" => EventKind::RefundAbnormal,
        _ if is_payment => payment_kind(event_type, object.get("trade_state").and_then(Value::as_str)),
        _ => EventKind::Other,
    };
    let out_trade_no = str_at(&object, "/out_trade_no").unwrap_or_default();
    if kind != EventKind::Other && out_trade_no.is_empty() {
        return Err(ChannelError::Malformed("decrypted resource has no out_trade_no".into()));
    }
    let refund = if kind.is_refund() {
        Some(RefundInfo {
            out_refund_no: str_at(&object, "/out_refund_no"),
            refund_id: str_at(&object, "/refund_id"),
            amount_minor: integer_minor_at(&object, "/amount/refund")?,
        })
    } else {
        None
    };
    let raw_status = if kind.is_refund() {
        str_at(&object, "/refund_status")
    } else {
        str_at(&object, "/trade_state")
    };
    // Partner (服务商) mode names the service provider's ids sp_mchid / sp_appid.
    let merchant = MerchantRef {
        app_id: str_at(&object, "/appid").or_else(|| str_at(&object, "/sp_appid")),
        mch_id: str_at(&object, "/mchid").or_else(|| str_at(&object, "/sp_mchid")),
    };
    let amount_minor = integer_minor_at(&object, "/amount/total")?;
    // WeChat Pay v3 refund notifications carry no currency; domestic merchants settle in CNY.
    let currency = str_at(&object, "/amount/currency")
        .or_else(|| amount_minor.map(|_| "CNY".to_string()))
        .map(|c| c.to_ascii_uppercase());
    Ok(VerifiedEvent {
        channel: ChannelKind::WechatpayV3,
        kind,
        out_trade_no,
        channel_txn_id: str_at(&object, "/transaction_id"),
        amount_minor,
        currency,
        refund,
        occurred_at: str_at(&object, "/success_time").or(create_time),
        notification_id,
        raw_status,
        merchant,
        raw: object,
    })
}

/// Produces a valid WeChat Pay v3 notification for `spec`: the resource encrypted with
/// `keys.api_v3_key`, signed with `keys.private_key_pem` (playing the platform key) and announced
/// under `keys.key_id` (a certificate serial or `PUB_KEY_ID_…`).
pub(crate) fn simulate(spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
    let pem = keys
        .private_key_pem
        .as_deref()
        .ok_or("wechatpay_v3 needs a private key (private_key_pem)")?;
    let serial = keys
        .key_id
        .as_deref()
        .ok_or("wechatpay_v3 needs a key id (certificate serial or PUB_KEY_ID_...)")?;
    let api_v3_key = keys.api_v3_key.as_deref().ok_or("wechatpay_v3 needs an APIv3 key")?;
    let private_key = RsaSigningKey::from_pem(pem).map_err(|e| format!("private_key_pem: {e}"))?;
    let offset = jiff::tz::Offset::constant(8);
    let when = spec
        .at
        .to_zoned(jiff::tz::TimeZone::fixed(offset))
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let mchid = spec.mch_id.clone().unwrap_or_else(|| "1900000001".into());
    let (event_type, summary, original_type, object) = match spec.kind {
        EventKind::RefundSucceeded | EventKind::RefundClosed | EventKind::RefundAbnormal => {
            let (event_type, status) = match spec.kind {
                EventKind::RefundSucceeded => ("REFUND.SUCCESS", "SUCCESS"),
                EventKind::RefundClosed => ("REFUND.CLOSED", "CLOSED"),
                _ => ("REFUND.ABNORMAL", "ABNORMAL"),
            };
            let refund = spec.refund_amount_minor.unwrap_or(spec.amount_minor);
            let object = json!({
                "mchid": mchid,
                "out_trade_no": spec.out_trade_no,
                "transaction_id": spec.channel_txn_id,
                "out_refund_no": spec.out_refund_no.clone().unwrap_or_else(|| format!("{}-R1", spec.out_trade_no)),
                "refund_id": format!("5030000000{}", spec.at.as_second()),
                "refund_status": status,
                "success_time": when,
                "user_received_account": "支付用户零钱",
                "amount": {"total": spec.amount_minor, "refund": refund, "payer_total": spec.amount_minor, "payer_refund": refund},
            });
            (event_type, "退款通知", "refund", object)
        }
        kind => {
            let (event_type, state) = match kind {
                EventKind::PaymentSucceeded => ("TRANSACTION.SUCCESS", "SUCCESS"),
                EventKind::PaymentPending => ("TRANSACTION.NOTPAY", "NOTPAY"),
                EventKind::PaymentClosed => ("TRANSACTION.CLOSED", "CLOSED"),
                EventKind::PaymentFailed => ("TRANSACTION.PAYERROR", "PAYERROR"),
                other => return Err(format!("wechatpay_v3 cannot simulate {}", other.as_str())),
            };
            let currency = spec.currency.to_ascii_uppercase();
            let mut object = json!({
                "mchid": mchid,
                "out_trade_no": spec.out_trade_no,
                "transaction_id": spec.channel_txn_id,
                "trade_type": "JSAPI",
                "trade_state": state,
                "trade_state_desc": state,
                "bank_type": "OTHERS",
                "attach": "",
                "success_time": when,
                "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
                "amount": {"total": spec.amount_minor, "payer_total": spec.amount_minor, "currency": currency, "payer_currency": currency},
            });
            if let (Some(appid), Some(map)) = (&spec.app_id, object.as_object_mut()) {
                map.insert("appid".into(), Value::String(appid.clone()));
            }
            (event_type, "支付通知", "transaction", object)
        }
    };
    let resource_nonce = Alphanumeric.sample_string(&mut rand::rng(), 12);
    let ciphertext = encrypt_resource(
        api_v3_key,
        resource_nonce.as_bytes(),
        original_type.as_bytes(),
        object.to_string().as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let body = json!({
        "id": spec.notification_id,
        "create_time": when,
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": summary,
        "resource": {
            "original_type": original_type,
            "algorithm": RESOURCE_ALGORITHM,
            "ciphertext": ciphertext,
            "associated_data": original_type,
            "nonce": resource_nonce,
        },
    })
    .to_string()
    .into_bytes();
    let timestamp = spec.at.as_second().to_string();
    let nonce = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let signature = private_key.sign_sha256(&signed_message(&timestamp, &nonce, &body))?;
    Ok(SimulatedNotification {
        headers: vec![
            ("Wechatpay-Serial".into(), serial.to_string()),
            ("Wechatpay-Timestamp".into(), timestamp),
            ("Wechatpay-Nonce".into(), nonce),
            ("Wechatpay-Signature".into(), BASE64.encode(signature)),
            ("Wechatpay-Signature-Type".into(), SIGNATURE_TYPE.into()),
        ],
        content_type: "application/json".into(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::test_support::{at, headers};
    use http::{HeaderMap, HeaderName, HeaderValue};
    use proptest::prelude::*;

    const DW_CERT: &str = include_str!("../../tests/fixtures/wechatpay_v3/vector_dw_platform_certificate.pem");
    const DW_PUBLIC_KEY: &str = include_str!("../../tests/fixtures/wechatpay_v3/vector_dw_public_key.pem");
    const SIM_KEY: &str = include_str!("../../tests/fixtures/wechatpay_v3/simulate_platform_private_key.pem");
    const SIM_CERT: &str = include_str!("../../tests/fixtures/wechatpay_v3/simulate_platform_certificate.pem");
    const SIM_PUBLIC_KEY: &str = include_str!("../../tests/fixtures/wechatpay_v3/simulate_platform_public_key.pem");
    const WEAK_PUBLIC_KEY: &str = include_str!("../../tests/fixtures/wechatpay_v3/weak_1024_public_key.pem");
    const WEAK_CERT: &str = include_str!("../../tests/fixtures/wechatpay_v3/weak_1024_certificate.pem");
    const DW_PUBLIC_KEY_PKCS1: &str = include_str!("../../tests/fixtures/wechatpay_v3/vector_dw_public_key_pkcs1.pem");

    const API_V3_KEY: &str = "53D67FCB97E68F9998CBD17ED7A8D1E2";
    const DW_SERIAL: &str = "45F59D4DABF31918AFCEC556D5D2C6E376675D57";
    const DW_OWN_SERIAL: &str = "25F8AA5452D55497C24BA57DC81B1E5915DC2E77";
    const DW_PUB_KEY_ID: &str = "PUB_KEY_ID_0000000000000024101100397200000006";
    const SIM_SERIAL: &str = "7A3C0FFEE1234567890ABCDEF0123456789ABCDE";
    const SIM_PUB_KEY_ID: &str = "PUB_KEY_ID_0114232020250101000000000001";

    const DW1_TS: &str = "1714536006";
    const DW1_NONCE: &str = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS";
    const DW1_SIG: &str = "Pyza/jw99OvZlsAoNUDWEKCjs+gr9ABFNarV13QRWPM2UQ5LiIxLHvwnjxISBiV0DINi7n74kkXMI1q4PNuc8efla9B1pmwYlSYR3V4dPYAriw5atdMFPMH6YimnOarXtrfeWOfGzi29VfvVxTLbpkhNCiHmH0QCYL/E4dyQk4hJcRvVCy3Wkm4SODK/FXSNTAc5onDfwJtj9hCVS0mZj/e5xmaJvusbuYGLxUJBiblutZHmqVuMB9zY/GcDCr8zMNN1Clo2fclSGvXWTML5WBftOmltNGEbPt49S1HtJlKhOsvFkWjMEClTeYgoTOq+1Dk2NPne5xmzkZd1ftvUpw==";
    const DW1_BODY: &str = r#"{"id":"b3c1f0e2-9a4d-5c6e-8f70-1a2b3c4d5e6f","create_time":"2024-05-01T12:00:06+08:00","resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS","summary":"支付成功","resource":{"original_type":"transaction","algorithm":"AEAD_AES_256_GCM","ciphertext":"GDc/anPmdlgfzpPfCczaw3BhVrOhROPrfxfzEcCG8hhg6eB4odUQYU7p7XqjFxKn6Y+Wor5neHerj/+KPATSmj7wqz8Y/QeDDIf0675eXV3cqCjl2fn7G8h43k4x26LSRfqXSss+tvqStIjc7ndVCLdI2vHh2OqqrJO9cm4CBS/AcfknZfQ9AWRgSLzrAgh3JNIu6uVi87IyV02CC0fOcsI5hGmX1ugACP9N9Q4AZ16M1ywbyCu/w7WMjbfLjKzzQfWztelr5HBsvHVWFE4UgUYOB5V5Q9IHo1hAJAVvWNb8twVEyhqRIgUJqnXba5lHVn9KGII26hrgS7WRTrD85/+JoxLgvbTIxizK151NMRjMf6hUTikCi8lxCpR708ECHP8CgeLY1PjWu+9M9a31GBrYhDRP6zMRVNPKVAsjRPzU8AL3VTQiwWX1QGiZJWzDpo6Z5l1SZaw03outLPqxW06BC/B3oMPHjGiFxqx7K2JhBeoIVEL/AY69M1SLFxekrG/lj6gK7139oSPcUv5rLlRwCOF/0GmLRugiFKkAzrEumRHdB4MCdKXwzE8bB1I8I/TzjkNREfU=","associated_data":"transaction","nonce":"fJ8Cz9qWe3Rt"}}"#;
    const DW2_TS: &str = "1714615201";
    const DW2_NONCE: &str = "NZK3rLQ0RPSu6yKxD6kQ2bNwXbGp4uHc";
    const DW2_SIG: &str = "Wtd9Pksf/EiSFEyQ5D/3saY7Uj48gotCVOXRF2+c3rxpH24Fx6+cWvqaJ35EhLmSoeZZnZYbLxvFQrDC5IpkHvL46H9vJK2IYbSCZl0pfqHKtpQJ2YLK3x0L89/AM8X3vMoTNXjjt4Iex5P5d8WyPOPaKRZ1hfBeWFppltb9i2MhtnpS91X1HQKjEDu3H5UCjT1ZOEu8qkxxg0PO8Anb2mEbKQqzT1xqXngmAqc6LvaRUG8PtFpGsiONE9Y7g1D13faBM7IXP5i3bBsK0sJiRIsH1/T5HH4I1fQYYlFLyEM0/9krAYF9nlKVm4M1gimfLW8XFv9OphksZ4xR8Bn1Zw==";
    const DW2_BODY: &str = r#"{"id":"c4d2a1f3-0b5e-5d7f-9a81-2b3c4d5e6f70","create_time":"2024-05-02T10:00:01+08:00","resource_type":"encrypt-resource","event_type":"REFUND.SUCCESS","summary":"退款成功","resource":{"original_type":"refund","algorithm":"AEAD_AES_256_GCM","ciphertext":"D8rrBCIvp+lc02BIsUS1OjyFDulDlohg4xzYwYfQzJikZ03OpqgMLGrcVvttJaPGvmv0kON5/gbPnV9wIRHsbrcQ4ZOFCgmiWQOsTkTI8WzN4WGw1sEHOEdPxXWy7FXVWSUS1cuwI5FrL9Lsc4dn6WCv54a1HBYVYRG2cvaP8thw8Xpn4cPZ65JDy8n/oY6SbVmT/fOmE+sHpaumGW90N0OiFnxOShhD5cXaUl9N94vboVaUtPZZU7XaaPm0lnelRN32ULgRfd3c6jUR6mVZ2F1/rS8T1RLSijn7TQwfzf4Nug1yVfryH5BbJW2g1XRdXoqjEs+JP5jAq3xk0nHkfPiaw3QqumoOmM4u+8W6luXDWe9SZYdjfDtd7PZd+KjgMtMFVb7Ctfu10X/d1fDo2ag7uu2IxuSJquObcIsGAf/LyXlmDECgox90lJlQ8amnr9XqZ0pxlSDD8vTe5xndg2DLEim2uSb3D438BXivZR4hbmrygPiFl/LraVg22WY9ttVT8iTNdeaef0f/Bg==","associated_data":"refund","nonce":"Qw7Er5Ty1Ui9"}}"#;

    fn config() -> WechatpayV3Config {
        WechatpayV3Config {
            mchid: "1900000001".into(),
            appid: Some("wxd678efh567hg6787".into()),
            api_v3_key: SecretRef::new(API_V3_KEY),
            keys_downloaded: false,
            platform_certificates: vec![PlatformCertificate::Pinned(PinnedCertificate {
                serial: DW_SERIAL.into(),
                certificate: SecretRef::new(DW_CERT),
            })],
            public_key_id: None,
            public_key: None,
            tolerance: default_tolerance(),
        }
    }

    fn channel() -> WechatpayV3 {
        config().build().unwrap()
    }

    fn dw1_headers(serial: &str) -> HeaderMap {
        headers(&[
            ("Wechatpay-Serial", serial),
            ("Wechatpay-Timestamp", DW1_TS),
            ("Wechatpay-Nonce", DW1_NONCE),
            ("Wechatpay-Signature", DW1_SIG),
            ("Wechatpay-Signature-Type", SIGNATURE_TYPE),
        ])
    }

    fn dw1_now() -> Timestamp {
        at(1714536006)
    }

    fn verify(ch: &WechatpayV3, h: &HeaderMap, body: &[u8], now: Timestamp) -> Result<VerifiedEvent, ChannelError> {
        ch.verify(&NotifyRequest { headers: h, body }, now)
    }

    fn verify_dw1_with(ch: &WechatpayV3, serial: &str) -> Result<VerifiedEvent, ChannelError> {
        verify(ch, &dw1_headers(serial), DW1_BODY.as_bytes(), dw1_now())
    }

    /// Headers of a notification signed here with the simulation key.
    fn sim_signed(serial: &str, ts: &str, body: &[u8]) -> HeaderMap {
        let key = RsaSigningKey::from_pem(SIM_KEY).unwrap();
        let nonce = "n0nceN0nceN0nceN0nceN0nceN0nce12";
        let sig = key.sign_sha256(&signed_message(ts, nonce, body)).unwrap();
        headers(&[
            ("Wechatpay-Serial", serial),
            ("Wechatpay-Timestamp", ts),
            ("Wechatpay-Nonce", nonce),
            ("Wechatpay-Signature", &BASE64.encode(sig)),
        ])
    }

    fn sim_channel() -> WechatpayV3 {
        let mut cfg = config();
        cfg.platform_certificates = vec![PlatformCertificate::Pem(SecretRef::new(SIM_CERT))];
        cfg.public_key_id = Some(SIM_PUB_KEY_ID.into());
        cfg.public_key = Some(SecretRef::new(SIM_PUBLIC_KEY));
        cfg.build().unwrap()
    }

    fn sim_spec(kind: EventKind) -> SimulateSpec {
        SimulateSpec {
            out_trade_no: "ORDER-SIM-0001".into(),
            amount_minor: 8880,
            currency: "cny".into(),
            kind,
            out_refund_no: Some("REFUND-SIM-0001".into()),
            refund_amount_minor: Some(1000),
            channel_txn_id: "4200002000202405010000000009".into(),
            at: at(1714536006),
            notification_id: "EV-SIM-0001".into(),
            app_id: Some("wxd678efh567hg6787".into()),
            mch_id: Some("1900000001".into()),
        }
    }

    fn sim_keys(key_id: &str) -> SimulateKeys {
        SimulateKeys {
            private_key_pem: Some(SIM_KEY.into()),
            key_id: Some(key_id.into()),
            api_v3_key: Some(API_V3_KEY.as_bytes().to_vec()),
            ..SimulateKeys::default()
        }
    }

    fn send(n: &SimulatedNotification) -> HeaderMap {
        let pairs: Vec<(&str, &str)> = n.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        headers(&pairs)
    }

    #[test]
    fn dw1_transaction_success_verifies_and_normalizes() {
        let event = verify_dw1_with(&channel(), DW_SERIAL).unwrap();
        assert_eq!(event.channel, ChannelKind::WechatpayV3);
        assert_eq!(event.kind, EventKind::PaymentSucceeded);
        assert_eq!(event.out_trade_no, "ORDER-20240501-0101");
        assert_eq!(event.channel_txn_id.as_deref(), Some("4200002000202405010000000001"));
        assert_eq!(event.amount_minor, Some(8880));
        assert_eq!(event.currency.as_deref(), Some("CNY"));
        assert_eq!(
            event.notification_id.as_deref(),
            Some("b3c1f0e2-9a4d-5c6e-8f70-1a2b3c4d5e6f")
        );
        assert_eq!(event.raw_status.as_deref(), Some("SUCCESS"));
        assert_eq!(event.occurred_at.as_deref(), Some("2024-05-01T12:00:05+08:00"));
        assert_eq!(event.merchant.mch_id.as_deref(), Some("1900000001"));
        assert_eq!(event.merchant.app_id.as_deref(), Some("wxd678efh567hg6787"));
        assert_eq!(event.refund, None);
        assert_eq!(event.raw["payer"]["openid"], "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
    }

    #[test]
    fn dw2_refund_success_verifies_without_signature_type_header() {
        let h = headers(&[
            ("Wechatpay-Serial", DW_SERIAL),
            ("Wechatpay-Timestamp", DW2_TS),
            ("Wechatpay-Nonce", DW2_NONCE),
            ("Wechatpay-Signature", DW2_SIG),
        ]);
        let event = verify(&channel(), &h, DW2_BODY.as_bytes(), at(1714615201)).unwrap();
        assert_eq!(event.kind, EventKind::RefundSucceeded);
        assert_eq!(event.out_trade_no, "ORDER-20240501-0101");
        assert_eq!(event.raw_status.as_deref(), Some("SUCCESS"));
        assert_eq!(event.amount_minor, Some(8880));
        let refund = event.refund.unwrap();
        assert_eq!(refund.out_refund_no.as_deref(), Some("REFUND-20240502-0001"));
        assert_eq!(refund.refund_id.as_deref(), Some("50300000002024050200000000001"));
        assert_eq!(refund.amount_minor, Some(1000));
        assert_eq!(
            event.notification_id.as_deref(),
            Some("c4d2a1f3-0b5e-5d7f-9a81-2b3c4d5e6f70")
        );
    }

    #[test]
    fn dw1_verifies_under_the_certificates_own_serial_in_any_case_and_with_leading_zeros() {
        let mut cfg = config();
        cfg.platform_certificates = vec![PlatformCertificate::Pem(SecretRef::new(DW_CERT))];
        let ch = cfg.build().unwrap();
        assert!(verify_dw1_with(&ch, DW_OWN_SERIAL).is_ok());
        assert!(verify_dw1_with(&ch, &DW_OWN_SERIAL.to_ascii_lowercase()).is_ok());
        assert!(verify_dw1_with(&ch, &format!("00{DW_OWN_SERIAL}")).is_ok());
        assert!(matches!(
            verify_dw1_with(&ch, DW_SERIAL),
            Err(ChannelError::UnknownKey(_))
        ));
    }

    /// Public-key mode only: the DW vectors' key under `PUB_KEY_ID_…`, in the PEM form given.
    fn dw_public_key_mode_channel(public_key_pem: &str) -> WechatpayV3 {
        let mut cfg = config();
        cfg.platform_certificates.clear();
        cfg.public_key_id = Some(DW_PUB_KEY_ID.into());
        cfg.public_key = Some(SecretRef::new(public_key_pem));
        cfg.build().unwrap()
    }

    #[test]
    fn dw1_verifies_in_public_key_mode_when_serial_is_the_key_id() {
        let ch = dw_public_key_mode_channel(DW_PUBLIC_KEY);
        assert_eq!(
            verify_dw1_with(&ch, DW_PUB_KEY_ID).unwrap().out_trade_no,
            "ORDER-20240501-0101"
        );
        // wechatpay-go SHA256WithRSAPubkeyVerifier: the serial must equal the configured id.
        let other_id = "PUB_KEY_ID_0000000000000024101100397200000007";
        assert!(matches!(
            verify_dw1_with(&ch, other_id),
            Err(ChannelError::UnknownKey(_))
        ));
        assert!(matches!(
            verify_dw1_with(&ch, DW_SERIAL),
            Err(ChannelError::UnknownKey(_))
        ));
    }

    #[test]
    fn dw1_verifies_in_public_key_mode_with_a_pkcs1_public_key() {
        let ch = dw_public_key_mode_channel(DW_PUBLIC_KEY_PKCS1);
        assert!(verify_dw1_with(&ch, DW_PUB_KEY_ID).is_ok());
    }

    #[test]
    fn combined_mode_selects_public_key_or_platform_certificate_by_serial() {
        let mut cfg = config();
        cfg.public_key_id = Some(SIM_PUB_KEY_ID.into());
        cfg.public_key = Some(SecretRef::new(SIM_PUBLIC_KEY));
        let ch = cfg.build().unwrap();
        assert!(verify_dw1_with(&ch, DW_SERIAL).is_ok());
        // The DW1 signature is not made by the simulation key behind the public-key id.
        assert!(matches!(
            verify_dw1_with(&ch, SIM_PUB_KEY_ID),
            Err(ChannelError::Signature(_))
        ));
    }

    #[test]
    fn dw1_clock_at_ts_plus_299_accepts_and_plus_300_rejects() {
        let ch = channel();
        let h = dw1_headers(DW_SERIAL);
        let body = DW1_BODY.as_bytes();
        assert!(verify(&ch, &h, body, at(1714536006 + 299)).is_ok());
        assert!(matches!(
            verify(&ch, &h, body, at(1714536006 + 300)),
            Err(ChannelError::Stale(_))
        ));
        assert!(verify(&ch, &h, body, at(1714536006 - 299)).is_ok());
        assert!(matches!(
            verify(&ch, &h, body, at(1714536006 - 300)),
            Err(ChannelError::Stale(_))
        ));
    }

    #[test]
    fn configured_tolerance_widens_the_window() {
        let mut cfg = config();
        cfg.tolerance = Duration::from_secs(600);
        let ch = cfg.build().unwrap();
        assert!(verify(&ch, &dw1_headers(DW_SERIAL), DW1_BODY.as_bytes(), at(1714536006 + 599)).is_ok());
    }

    #[test]
    fn signtest_probe_signature_is_rejected() {
        let mut h = dw1_headers(DW_SERIAL);
        h.insert(
            "wechatpay-signature",
            HeaderValue::from_static("WECHATPAY/SIGNTEST/abc"),
        );
        assert!(matches!(
            verify(&channel(), &h, DW1_BODY.as_bytes(), dw1_now()),
            Err(ChannelError::Signature(_))
        ));
    }

    #[test]
    fn unknown_serial_is_an_unknown_key_error() {
        let err = verify_dw1_with(&channel(), "5157F09EFDC096DE15EBE81A47057A7232F1B8E1").unwrap_err();
        assert!(matches!(err, ChannelError::UnknownKey(_)), "{err:?}");
        assert_eq!(err.outcome().as_str(), "rejected_unknown_key");
        assert!(matches!(
            verify_dw1_with(&channel(), "not-hex"),
            Err(ChannelError::Malformed(_))
        ));
    }

    #[test]
    fn header_timestamp_changed_by_one_fails_signature() {
        let mut h = dw1_headers(DW_SERIAL);
        h.insert("wechatpay-timestamp", HeaderValue::from_static("1714536007"));
        assert!(matches!(
            verify(&channel(), &h, DW1_BODY.as_bytes(), dw1_now()),
            Err(ChannelError::Signature(_))
        ));
    }

    #[test]
    fn tampered_nonce_fails_signature() {
        let mut h = dw1_headers(DW_SERIAL);
        h.insert(
            "wechatpay-nonce",
            HeaderValue::from_static("5K8264ILTKCH16CQ2502SI8ZNMTM67VT"),
        );
        assert!(matches!(
            verify(&channel(), &h, DW1_BODY.as_bytes(), dw1_now()),
            Err(ChannelError::Signature(_))
        ));
    }

    #[test]
    fn body_reserialized_with_sorted_keys_fails_signature() {
        let parsed: Value = serde_json::from_str(DW1_BODY).unwrap();
        let resorted = serde_json::to_vec(&parsed).unwrap();
        assert!(resorted.starts_with(br#"{"create_time":"2024-05-01T12:00:06+08:00","event_type":"TRANSACTION.SUCCESS","id":"b3c1f0e2-9a4d-5c6e-8f70-1a"#));
        let err = verify(&channel(), &dw1_headers(DW_SERIAL), &resorted, dw1_now()).unwrap_err();
        assert!(matches!(err, ChannelError::Signature(_)));
    }

    #[test]
    fn tampered_body_byte_fails_signature() {
        let body = DW1_BODY.replace("TRANSACTION.SUCCESS", "TRANSACTION.SUCCESs");
        assert!(matches!(
            verify(&channel(), &dw1_headers(DW_SERIAL), body.as_bytes(), dw1_now()),
            Err(ChannelError::Signature(_))
        ));
    }

    #[test]
    fn wrong_api_v3_key_verifies_signature_but_fails_decryption() {
        let mut cfg = config();
        cfg.api_v3_key = SecretRef::new("00000000000000000000000000000000");
        let err = verify_dw1_with(&cfg.build().unwrap(), DW_SERIAL).unwrap_err();
        assert!(matches!(err, ChannelError::Decrypt(_)), "{err:?}");
        assert_eq!(err.outcome().as_str(), "rejected_decrypt");
    }

    #[test]
    fn resource_algorithm_other_than_aead_aes_256_gcm_is_rejected() {
        let n = simulate(&sim_spec(EventKind::PaymentSucceeded), &sim_keys(SIM_SERIAL)).unwrap();
        let body = String::from_utf8(n.body)
            .unwrap()
            .replace("AEAD_AES_256_GCM", "AEAD_SM4_GCM");
        let h = sim_signed(SIM_SERIAL, "1714536006", body.as_bytes());
        let err = verify(&sim_channel(), &h, body.as_bytes(), at(1714536006)).unwrap_err();
        assert!(matches!(err, ChannelError::Unsupported(_)), "{err:?}");
    }

    #[test]
    fn an_order_query_answer_is_the_event_its_notification_would_be() {
        let ch = channel();
        let answer = |state: &str, mchid: &str| {
            format!(
                r#"{{"appid":"wxd678efh567hg6787","mchid":"{mchid}","out_trade_no":"ORDER-20240501-0101","transaction_id":"4200000000202405010000000101","trade_type":"NATIVE","trade_state":"{state}","trade_state_desc":"x","success_time":"2018-06-08T10:34:56+08:00","amount":{{"total":8880,"payer_total":8880,"currency":"CNY","payer_currency":"CNY"}}}}"#
            )
        };
        let paid = ch.event_from_query(answer("SUCCESS", "1900000001").as_bytes()).unwrap();
        assert_eq!(paid.kind, EventKind::PaymentSucceeded);
        assert_eq!(paid.amount_minor, Some(8880));
        assert_eq!(paid.notification_id, None);
        let notified = verify_dw1_with(&ch, DW_SERIAL).unwrap();
        assert_eq!(
            crate::notify::EventKeys::of(&paid, b"query").dedup_key,
            crate::notify::EventKeys::of(&notified, b"notification").dedup_key,
            "the query's event has the notification's dedup key"
        );
        // Paid, then refunded: the order was paid.
        let refunded = ch.event_from_query(answer("REFUND", "1900000001").as_bytes()).unwrap();
        assert_eq!(refunded.kind, EventKind::PaymentSucceeded);
        assert_eq!(refunded.raw_status.as_deref(), Some("REFUND"));
        assert_eq!(
            ch.event_from_query(answer("NOTPAY", "1900000001").as_bytes()).unwrap().kind,
            EventKind::PaymentPending
        );
        assert!(matches!(
            ch.event_from_query(answer("SUCCESS", "1900000002").as_bytes()),
            Err(ChannelError::Business(_))
        ));
        assert!(matches!(
            ch.event_from_query(br#"{"out_trade_no":"a","out_trade_no":"b"}"#),
            Err(ChannelError::Malformed(_))
        ));
    }

    #[test]
    fn dw1_redelivery_yields_the_same_event_for_dedup() {
        let ch = channel();
        let first = verify_dw1_with(&ch, DW_SERIAL).unwrap();
        let second = verify(&ch, &dw1_headers(DW_SERIAL), DW1_BODY.as_bytes(), at(1714536006 + 60)).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn w3_aes_gcm_primitive_vector_decrypts_with_a_16_byte_key() {
        let plain = decrypt_resource(
            b"testAPIv3Key0000",
            b"wCq51qZv4Yfg",
            b"Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
            "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC",
        )
        .unwrap();
        assert_eq!(plain, b"Hello World");
        let wrong = decrypt_resource(
            b"testAPIv3Key1111",
            b"wCq51qZv4Yfg",
            b"Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
            "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC",
        );
        assert!(matches!(wrong, Err(ChannelError::Decrypt(_))));
    }

    #[test]
    fn aes_gcm_accepts_16_24_32_byte_keys_and_refuses_other_sizes() {
        for len in [16, 24, 32] {
            let key = vec![b'k'; len];
            let ct = encrypt_resource(&key, b"abcdefghijkl", b"transaction", b"{}").unwrap();
            assert_eq!(
                decrypt_resource(&key, b"abcdefghijkl", b"transaction", &ct).unwrap(),
                b"{}"
            );
            assert!(
                decrypt_resource(&key, b"abcdefghijkl", b"refund", &ct).is_err(),
                "AAD is authenticated"
            );
        }
        for len in [0, 15, 31, 33] {
            assert!(matches!(
                encrypt_resource(&vec![b'k'; len], b"abcdefghijkl", b"", b"{}"),
                Err(ChannelError::Decrypt(_))
            ));
        }
        assert!(matches!(
            decrypt_resource(&[b'k'; 32], b"short", b"", "AAAA"),
            Err(ChannelError::Decrypt(_))
        ));
        assert!(matches!(
            decrypt_resource(&[b'k'; 32], b"abcdefghijkl", b"", "not base64!"),
            Err(ChannelError::Decrypt(_))
        ));
    }

    #[test]
    fn sm2_signature_type_is_unsupported() {
        let mut h = dw1_headers(DW_SERIAL);
        h.insert(
            "wechatpay-signature-type",
            HeaderValue::from_static("WECHATPAY2-SM2-WITH-SM3"),
        );
        assert!(matches!(
            verify(&channel(), &h, DW1_BODY.as_bytes(), dw1_now()),
            Err(ChannelError::Unsupported(_))
        ));
    }

    #[test]
    fn duplicate_security_header_is_malformed() {
        for name in [
            "Wechatpay-Signature",
            "Wechatpay-Serial",
            "Wechatpay-Timestamp",
            "Wechatpay-Nonce",
            "Wechatpay-Signature-Type",
        ] {
            let mut h = dw1_headers(DW_SERIAL);
            let value = h.get(name).unwrap().clone();
            h.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
            let err = verify(&channel(), &h, DW1_BODY.as_bytes(), dw1_now()).unwrap_err();
            assert!(matches!(err, ChannelError::Malformed(_)), "{name}: {err:?}");
        }
    }

    #[test]
    fn missing_security_header_is_malformed() {
        for name in [
            "Wechatpay-Signature",
            "Wechatpay-Serial",
            "Wechatpay-Timestamp",
            "Wechatpay-Nonce",
        ] {
            let mut h = dw1_headers(DW_SERIAL);
            h.remove(name);
            assert!(
                matches!(
                    verify(&channel(), &h, DW1_BODY.as_bytes(), dw1_now()),
                    Err(ChannelError::Malformed(_))
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn timestamp_must_be_one_to_ten_digits() {
        for ts in ["+1714536006", " 1714536006", "01714536006", "1714536006.0", "-1", ""] {
            let mut h = dw1_headers(DW_SERIAL);
            h.insert("wechatpay-timestamp", HeaderValue::from_str(ts).unwrap());
            assert!(
                matches!(
                    verify(&channel(), &h, DW1_BODY.as_bytes(), dw1_now()),
                    Err(ChannelError::Malformed(_))
                ),
                "{ts:?}"
            );
        }
    }

    #[test]
    fn bad_base64_or_truncated_signature_is_a_signature_failure() {
        for sig in ["%%%not-base64%%%", "AAAA", &DW1_SIG[..DW1_SIG.len() - 4]] {
            let mut h = dw1_headers(DW_SERIAL);
            h.insert("wechatpay-signature", HeaderValue::from_str(sig).unwrap());
            assert!(
                matches!(
                    verify(&channel(), &h, DW1_BODY.as_bytes(), dw1_now()),
                    Err(ChannelError::Signature(_))
                ),
                "{sig}"
            );
        }
    }

    #[test]
    fn other_merchant_or_app_is_a_business_failure() {
        let mut cfg = config();
        cfg.mchid = "1900000002".into();
        assert!(matches!(
            verify_dw1_with(&cfg.build().unwrap(), DW_SERIAL),
            Err(ChannelError::Business(_))
        ));
        let mut cfg = config();
        cfg.appid = Some("wx0000000000000000".into());
        assert!(matches!(
            verify_dw1_with(&cfg.build().unwrap(), DW_SERIAL),
            Err(ChannelError::Business(_))
        ));
        let mut cfg = config();
        cfg.appid = None;
        assert!(verify_dw1_with(&cfg.build().unwrap(), DW_SERIAL).is_ok());
    }

    #[test]
    fn expired_platform_certificate_is_not_used() {
        // The DW certificate's notAfter is 2026-07-15; a notification at 2026-08-01 must not use it.
        let ts = "1785542400";
        let mut h = dw1_headers(DW_SERIAL);
        h.insert("wechatpay-timestamp", HeaderValue::from_static(ts));
        let err = verify(&channel(), &h, DW1_BODY.as_bytes(), at(1785542400)).unwrap_err();
        assert!(matches!(err, ChannelError::UnknownKey(_)), "{err:?}");
    }

    #[test]
    fn negative_or_zero_payment_amounts_are_refused() {
        let ch = sim_channel();
        for amount in [-8880, 0] {
            let spec = SimulateSpec {
                amount_minor: amount,
                ..sim_spec(EventKind::PaymentSucceeded)
            };
            let n = simulate(&spec, &sim_keys(SIM_SERIAL)).unwrap();
            let err = verify(&ch, &send(&n), &n.body, at(1714536006)).unwrap_err();
            assert!(matches!(err, ChannelError::Amount(_)), "{amount}: {err:?}");
            assert_eq!(ch.rejection_ack(&err).status, 400);
        }
    }

    #[test]
    fn a_repeated_key_inside_the_decrypted_resource_is_malformed() {
        let ch = sim_channel();
        let n = simulate(&sim_spec(EventKind::PaymentSucceeded), &sim_keys(SIM_SERIAL)).unwrap();
        let mut envelope: Value = serde_json::from_slice(&n.body).unwrap();
        let resource = &envelope["resource"];
        let nonce = resource["nonce"].as_str().unwrap().to_string();
        let aad = resource["associated_data"].as_str().unwrap_or("").to_string();
        let plaintext = decrypt_resource(
            API_V3_KEY.as_bytes(),
            nonce.as_bytes(),
            aad.as_bytes(),
            resource["ciphertext"].as_str().unwrap(),
        )
        .unwrap();
        // The genuine object with a second, contradicting `trade_state` appended.
        let text = String::from_utf8(plaintext).unwrap();
        let doubled = format!(
            "{},\"trade_state\":\"NOTPAY\"}}",
            text.trim_end().strip_suffix('}').unwrap()
        );
        envelope["resource"]["ciphertext"] = Value::String(
            encrypt_resource(
                API_V3_KEY.as_bytes(),
                nonce.as_bytes(),
                aad.as_bytes(),
                doubled.as_bytes(),
            )
            .unwrap(),
        );
        let body = serde_json::to_vec(&envelope).unwrap();
        let ts = send(&n)
            .get("Wechatpay-Timestamp")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let err = verify(&ch, &sim_signed(SIM_SERIAL, &ts, &body), &body, at(1714536006)).unwrap_err();
        assert!(
            matches!(err, ChannelError::Malformed(ref m) if m.contains("decrypted resource")),
            "{err:?}"
        );
    }

    #[test]
    fn simulated_payment_round_trips_through_verify() {
        let ch = sim_channel();
        for kind in [
            EventKind::PaymentSucceeded,
            EventKind::PaymentPending,
            EventKind::PaymentClosed,
            EventKind::PaymentFailed,
        ] {
            let n = simulate(&sim_spec(kind), &sim_keys(SIM_SERIAL)).unwrap();
            assert_eq!(n.content_type, "application/json");
            let event = verify(&ch, &send(&n), &n.body, at(1714536006)).unwrap();
            assert_eq!(event.kind, kind);
            assert_eq!(event.out_trade_no, "ORDER-SIM-0001");
            assert_eq!(event.amount_minor, Some(8880));
            assert_eq!(event.currency.as_deref(), Some("CNY"));
            assert_eq!(event.channel_txn_id.as_deref(), Some("4200002000202405010000000009"));
            assert_eq!(event.notification_id.as_deref(), Some("EV-SIM-0001"));
            assert_eq!(event.occurred_at.as_deref(), Some("2024-05-01T12:00:06+08:00"));
        }
    }

    #[test]
    fn simulated_refund_round_trips_in_public_key_mode() {
        let n = simulate(&sim_spec(EventKind::RefundSucceeded), &sim_keys(SIM_PUB_KEY_ID)).unwrap();
        let event = verify(&sim_channel(), &send(&n), &n.body, at(1714536006)).unwrap();
        assert_eq!(event.kind, EventKind::RefundSucceeded);
        let refund = event.refund.unwrap();
        assert_eq!(refund.out_refund_no.as_deref(), Some("REFUND-SIM-0001"));
        assert_eq!(refund.amount_minor, Some(1000));
    }

    #[test]
    fn simulate_names_the_missing_key_material() {
        let spec = sim_spec(EventKind::PaymentSucceeded);
        assert!(simulate(&spec, &SimulateKeys::default())
            .unwrap_err()
            .contains("private key"));
        let mut keys = sim_keys(SIM_SERIAL);
        keys.api_v3_key = None;
        assert!(simulate(&spec, &keys).unwrap_err().contains("APIv3"));
        assert!(simulate(&sim_spec(EventKind::Other), &sim_keys(SIM_SERIAL)).is_err());
    }

    #[test]
    fn build_reports_wrong_key_sizes_by_field_without_secrets() {
        let mut cfg = config();
        cfg.api_v3_key = SecretRef::new("short-secret-key");
        cfg.public_key_id = Some(DW_PUB_KEY_ID.into());
        cfg.public_key = Some(SecretRef::new(WEAK_PUBLIC_KEY));
        let issues = cfg.build().unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["api_v3_key", "public_key"]);
        assert!(issues.iter().all(|i| !i.message.contains("short-secret-key")));
        assert!(issues[1].message.contains("1024 bits"), "{}", issues[1].message);
    }

    #[test]
    fn build_refuses_a_platform_certificate_with_a_1024_bit_key() {
        let mut cfg = config();
        cfg.platform_certificates = vec![PlatformCertificate::Pem(SecretRef::new(WEAK_CERT))];
        let issues = cfg.build().unwrap_err();
        assert_eq!(issues[0].path, "platform_certificates[0]");
        assert!(issues[0].message.contains("1024 bits"), "{}", issues[0].message);
        assert!(
            !issues[0].message.contains("BEGIN CERTIFICATE"),
            "{}",
            issues[0].message
        );
    }

    #[test]
    fn build_requires_some_verification_key_and_a_parsable_certificate() {
        let mut cfg = config();
        cfg.platform_certificates.clear();
        assert_eq!(cfg.build().unwrap_err()[0].path, "platform_certificates");
        cfg.platform_certificates = vec![PlatformCertificate::Pem(SecretRef::new("not a certificate"))];
        assert_eq!(cfg.build().unwrap_err()[0].path, "platform_certificates[0]");
        cfg.platform_certificates = vec![PlatformCertificate::Pem(SecretRef::new(
            "env:PG_TEST_WECHAT_CERT_UNSET",
        ))];
        let issues = cfg.build().unwrap_err();
        assert!(issues[0].message.contains("PG_TEST_WECHAT_CERT_UNSET"));
        cfg.platform_certificates.clear();
        cfg.public_key_id = Some(DW_PUB_KEY_ID.into());
        assert_eq!(cfg.build().unwrap_err()[0].path, "public_key");
    }

    #[test]
    fn config_parses_from_yaml_shape_and_rejects_unknown_keys() {
        let cfg: WechatpayV3Config = serde_json::from_value(json!({
            "mchid": "1900000001",
            "api_v3_key": "env:WECHAT_APIV3_KEY",
            "platform_certificates": ["file:/etc/payguard/wechat.pem", {"serial": "45F5", "certificate": "env:CERT"}],
            "tolerance": "5m"
        }))
        .unwrap();
        assert_eq!(cfg.tolerance, Duration::from_secs(300));
        assert!(matches!(cfg.platform_certificates[1], PlatformCertificate::Pinned(_)));
        let unknown =
            serde_json::from_value::<WechatpayV3Config>(json!({"mchid": "1", "api_v3_key": "x", "apikey": "y"}));
        assert!(unknown.is_err());
        let defaulted: WechatpayV3Config = serde_json::from_value(json!({"mchid": "1", "api_v3_key": "x"})).unwrap();
        assert_eq!(defaulted.tolerance, Duration::from_secs(300));
        let schema = serde_json::to_value(schemars::schema_for!(WechatpayV3Config)).unwrap();
        assert_eq!(schema["properties"]["tolerance"]["type"], "string");
        assert_eq!(schema["additionalProperties"], false);
    }

    #[test]
    fn debug_output_shows_no_key_material() {
        let text = format!("{:?} {:?}", channel(), config());
        assert!(!text.contains(API_V3_KEY));
        assert!(!text.contains("BEGIN CERTIFICATE"));
    }

    #[test]
    fn acks_follow_section_0_5() {
        let ch = channel();
        let ok = ch.success_ack();
        assert!(ok.status == 200 || ok.status == 204);
        assert!(ok.body.is_empty());
        let fail = ch.failure_ack("backend \"down\"");
        assert!(fail.status >= 400);
        assert_eq!(fail.content_type, Some("application/json"));
        let body: Value = serde_json::from_slice(&fail.body).unwrap();
        assert_eq!(body, json!({"code": "FAIL", "message": "backend \"down\""}));
        assert_eq!(failure_ack_with_status(401, "signature").status, 401);
        // How refused notifications are answered.
        assert_eq!(ch.rejection_ack(&ChannelError::Signature("x".into())).status, 401);
        assert_eq!(ch.rejection_ack(&ChannelError::Stale("x".into())).status, 401);
        assert_eq!(ch.rejection_ack(&ChannelError::UnknownKey("x".into())).status, 401);
        assert_eq!(ch.rejection_ack(&ChannelError::Malformed("x".into())).status, 400);
        let body: Value =
            serde_json::from_slice(&ch.rejection_ack(&ChannelError::Signature("secret detail".into())).body).unwrap();
        assert_eq!(body["code"], "FAIL");
        assert!(
            !body.to_string().contains("secret detail"),
            "details stay in the log, not the answer"
        );
    }

    const FIXTURE_API_V3_KEY: &[u8] = b"0123456789abcdef0123456789ABCDEF";
    const ROTATED_SERIAL: &str = "5EC0AD0000000000000000000000000000000B0B";
    const ROTATED_KEY: &str = include_str!("../../tests/fixtures/wechatpay_v3/rotated_platform_private_key.pem");
    const ROTATED_CERT: &str = include_str!("../../tests/fixtures/wechatpay_v3/rotated_platform_certificate.pem");

    fn certificates_answer(which: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/wechatpay_v3/certificates_answer_{which}.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn certificate_lists_from_the_python_encryptor_decrypt_to_their_listed_serials() {
        let current = decrypt_certificates(&certificates_answer("current"), FIXTURE_API_V3_KEY).unwrap();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0].1.serial(), SIM_SERIAL);
        // What the store keeps is still encrypted, and decrypts to the same certificate.
        assert!(!current[0].0.contains("BEGIN CERTIFICATE"), "{}", current[0].0);
        let again = decrypt_certificates(current[0].0.as_bytes(), FIXTURE_API_V3_KEY).unwrap();
        assert_eq!((again.len(), again[0].1.serial()), (1, SIM_SERIAL));
        assert_eq!(again[0].0, current[0].0);
        assert!(decrypt_certificates(current[0].0.as_bytes(), API_V3_KEY.as_bytes()).is_err());
        let rotated = decrypt_certificates(&certificates_answer("rotated"), FIXTURE_API_V3_KEY).unwrap();
        let serials: Vec<&str> = rotated.iter().map(|(_, k)| k.serial()).collect();
        assert_eq!(serials, [SIM_SERIAL, ROTATED_SERIAL]);
        assert!(rotated[1].0.contains(ROTATED_SERIAL) && !rotated[1].0.contains("BEGIN CERTIFICATE"));
        // The decrypted certificate is the fixture's.
        let file = pem_platform_keys(ROTATED_CERT.as_bytes()).unwrap();
        assert_eq!(
            (file[0].serial(), file[0].not_before, file[0].not_after()),
            (rotated[1].1.serial(), rotated[1].1.not_before, rotated[1].1.not_after())
        );
        let file = pem_platform_keys(SIM_CERT.as_bytes()).unwrap();
        assert_eq!((file[0].serial(), file[0].not_after()), (current[0].1.serial(), current[0].1.not_after()));
        assert!(rotated[1].1.not_after() > 4_000_000_000);
    }

    #[test]
    fn a_certificate_list_is_refused_whole_when_one_entry_is_wrong() {
        // Encrypted with another key: the AEAD does not authenticate it.
        let e = decrypt_certificates(&certificates_answer("forged"), FIXTURE_API_V3_KEY).unwrap_err();
        assert!(e.contains(ROTATED_SERIAL) && e.contains("AES-GCM"), "{e}");
        // Not the merchant's key at all.
        assert!(decrypt_certificates(&certificates_answer("current"), API_V3_KEY.as_bytes()).is_err());
        // Listed under a serial that is not the certificate's own.
        let relabelled = String::from_utf8(certificates_answer("current"))
            .unwrap()
            .replace(SIM_SERIAL, ROTATED_SERIAL);
        let e = decrypt_certificates(relabelled.as_bytes(), FIXTURE_API_V3_KEY).unwrap_err();
        assert!(e.contains("has serial"), "{e}");
        for body in [&b"{\"data\":[]}"[..], b"[]", b"", b"{\"data\":[{\"serial_no\":\"zz\"}]}"] {
            assert!(decrypt_certificates(body, FIXTURE_API_V3_KEY).is_err());
        }
    }

    #[test]
    fn a_serial_added_to_the_keyring_verifies_in_every_verifier_of_that_merchant() {
        // A merchant id of its own: the keyring is process-wide.
        let mchid = "1900000777";
        let mut cfg = config();
        cfg.mchid = mchid.into();
        cfg.appid = None;
        cfg.api_v3_key = SecretRef::new(std::str::from_utf8(FIXTURE_API_V3_KEY).unwrap());
        cfg.platform_certificates = vec![PlatformCertificate::Pem(SecretRef::new(SIM_CERT))];
        let notify_route = cfg.build().unwrap();
        let mut spec = sim_spec(EventKind::PaymentSucceeded);
        spec.mch_id = Some(mchid.into());
        spec.app_id = None;
        let keys = SimulateKeys {
            private_key_pem: Some(ROTATED_KEY.into()),
            key_id: Some(ROTATED_SERIAL.into()),
            api_v3_key: Some(FIXTURE_API_V3_KEY.to_vec()),
            ..SimulateKeys::default()
        };
        let n = simulate(&spec, &keys).unwrap();
        let ring = platform_keyring(mchid);
        let _ = ring.take_wanted();
        assert!(matches!(
            verify(&notify_route, &send(&n), &n.body, at(1714536006)),
            Err(ChannelError::UnknownKey(_))
        ));
        assert!(ring.take_wanted(), "the unknown serial asks for a download");
        let downloaded = decrypt_certificates(&certificates_answer("rotated"), FIXTURE_API_V3_KEY).unwrap();
        let keys: Vec<PlatformKey> = downloaded.into_iter().map(|(_, k)| k).collect();
        assert_eq!(ring.add(&keys), [SIM_SERIAL, ROTATED_SERIAL]);
        assert!(ring.add(&keys).is_empty(), "adding again adds nothing");
        // The verifier built before the download sees the new key, no rebuild needed.
        verify(&notify_route, &send(&n), &n.body, at(1714536006)).unwrap();
        assert!(!ring.take_wanted());
        assert_eq!(ring.summary().0, 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn arbitrary_headers_and_body_never_panic_and_never_verify(
            serial in prop_oneof![Just(DW_SERIAL.to_string()), "[0-9A-Fa-f]{0,44}", "PUB_KEY_ID_[0-9]{0,20}", "\\PC{0,20}"],
            ts in prop_oneof![Just(DW1_TS.to_string()), "[0-9]{0,12}", "\\PC{0,12}"],
            nonce in "\\PC{0,40}",
            sig in prop_oneof![Just(DW1_SIG.to_string()), "[A-Za-z0-9+/=]{0,400}", "\\PC{0,60}"],
            body in prop_oneof![proptest::collection::vec(any::<u8>(), 0..300), Just(DW1_BODY.as_bytes().to_vec())],
        ) {
            let mut h = HeaderMap::new();
            for (name, value) in [("wechatpay-serial", &serial), ("wechatpay-timestamp", &ts), ("wechatpay-nonce", &nonce), ("wechatpay-signature", &sig)] {
                if let Ok(v) = HeaderValue::from_str(value) {
                    h.insert(name, v);
                }
            }
            let genuine = serial == DW_SERIAL && ts == DW1_TS && nonce == DW1_NONCE && sig == DW1_SIG && body == DW1_BODY.as_bytes();
            let result = verify(&channel(), &h, &body, dw1_now());
            prop_assert_eq!(result.is_ok(), genuine);
        }
    }
}

//! Entry points for the fuzz targets (`fuzz/`) and their stable-toolchain smoke test
//! (`tests/fuzz_smoke.rs`). Not an API: nothing outside those two uses it, and it may change with
//! any release.
//!
//! Random bytes almost never carry a valid RSA signature, so a fuzzer driving only
//! [`Channel::verify`] would never get past the signature check of Alipay, UnionPay or WeChat
//! Pay. The functions here run a channel's code *below* its signature check — body parsing,
//! transcoding, decryption, normalization, business and amount checks — exactly as `verify`
//! runs it once the signature verified. They never skip anything else, and they are the same
//! functions `verify` calls, not copies. (Stripe, Standard Webhooks and the WeChat Pay v2 refund
//! notify are HMAC-signed or unsigned; their targets sign by construction and call `verify`.)

use std::collections::BTreeMap;

use crate::channels::alipay::AlipayChannel;
use crate::channels::form::{parse_form_raw, sorted_content};
use crate::channels::unionpay::{utf8_fields, UnionpayChannel};
use crate::channels::wechatpay_v2::{encrypt_req_info, parse_flat_xml, WechatpayV2Channel};
use crate::channels::wechatpay_v3::WechatpayV3;
use crate::channels::{check_amounts, Channel, ChannelError, VerifiedEvent};

/// The amount checks [`Channel::verify`] applies after `verify_signed`.
fn amounts_checked(
    channel: &dyn Channel,
    event: Result<VerifiedEvent, ChannelError>,
) -> Result<VerifiedEvent, ChannelError> {
    let event = event?;
    let zero = channel.zero_payment(&event);
    check_amounts(event, zero)
}

/// An Alipay notify `body` as if its signature verified: form decoding, charset transcoding,
/// app/seller checks, normalization, amount checks.
pub fn alipay_signed_body(channel: &AlipayChannel, body: &[u8]) -> Result<VerifiedEvent, ChannelError> {
    let fields = parse_form_raw(body)?;
    amounts_checked(channel, channel.event_from_signed(&fields))
}

/// A UnionPay back notification `body` as if its signature verified: form decoding, UTF-8,
/// merchant check, normalization, amount checks.
pub fn unionpay_signed_body(channel: &UnionpayChannel, body: &[u8]) -> Result<VerifiedEvent, ChannelError> {
    let raw = parse_form_raw(body)?;
    let fields = utf8_fields(&raw)?;
    amounts_checked(channel, channel.event_from_signed(&fields))
}

/// A WeChat Pay v3 callback `body` as if its signature verified: the envelope, the AES-256-GCM
/// resource decrypted with the channel's APIv3 key, strict JSON, normalization, merchant and
/// amount checks.
pub fn wechatpay_v3_signed_body(channel: &WechatpayV3, body: &[u8]) -> Result<VerifiedEvent, ChannelError> {
    amounts_checked(channel, channel.event_from_signed(body))
}

/// A WeChat Pay v2 payment notify `body` as if its `sign` verified: the flat XML, merchant
/// check, normalization, amount checks.
pub fn wechatpay_v2_signed_payment(channel: &WechatpayV2Channel, body: &[u8]) -> Result<VerifiedEvent, ChannelError> {
    let fields = parse_flat_xml(body, "xml")?;
    amounts_checked(channel, channel.payment_event(fields))
}

/// A WeChat Pay v2 refund `req_info`: `plaintext` encrypted with `api_key` (AES-256-ECB, PKCS#7).
pub fn wechatpay_v2_encrypt_req_info(plaintext: &[u8], api_key: &[u8]) -> String {
    encrypt_req_info(plaintext, api_key)
}

/// The WeChat Pay v2 XML reader: the fields of `<root_name>…</root_name>`.
pub fn flat_xml(body: &[u8], root_name: &str) -> Result<BTreeMap<String, String>, ChannelError> {
    parse_flat_xml(body, root_name)
}

/// The form decoder of Alipay and UnionPay: fields as raw bytes.
pub fn form_fields(body: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, ChannelError> {
    parse_form_raw(body)
}

/// The signed content of form fields: sorted `k=v&…` without `exclude`, empty values dropped
/// unless `include_empty`.
pub fn form_signed_content(fields: &BTreeMap<String, Vec<u8>>, exclude: &[&str], include_empty: bool) -> Vec<u8> {
    sorted_content(fields, exclude, include_empty)
}

//! The channels' daily trade bills, read into rows: WeChat Pay's trade bill (a UTF-8 CSV whose
//! values carry a leading backtick, then a summary) and Alipay's business detail bill (a zip
//! holding GBK CSV files between `#` comment lines). Amounts are decimal text made integer minor
//! units, never floating point; a bill with a row payguard cannot read exactly is refused whole,
//! with the row's number, so a report never silently leaves a row out.

use std::collections::HashMap;
use std::io::Read;

use crate::channels::amount::{parse_decimal_minor, parse_signed_decimal_minor};

/// Largest bill file read (a WeChat Pay CSV, an Alipay zip or one file inside it).
pub(crate) const MAX_BILL_BYTES: usize = 64 * 1024 * 1024;

/// A payment or a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RowKind {
    Payment,
    Refund,
}

/// One row of a bill.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct BillRow {
    pub(crate) kind: RowKind,
    pub(crate) out_trade_no: String,
    /// WeChat Pay `微信订单号`, Alipay `支付宝交易号`.
    pub(crate) channel_txn_id: String,
    /// A payment's order amount; a refund's refunded amount (minor units).
    pub(crate) amount_minor: i64,
    /// The merchant's refund number (WeChat Pay `商户退款单号`, Alipay `退款批次号/请求号`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) out_refund_no: Option<String>,
    /// The channel's refund id (WeChat Pay `微信退款单号`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) refund_id: Option<String>,
    /// When it happened, RFC 3339 in Beijing time.
    pub(crate) at: String,
    /// WeChat Pay `商户号` (empty for Alipay).
    #[serde(skip)]
    pub(crate) mch_id: String,
    /// WeChat Pay `公众账号ID` (empty for Alipay).
    #[serde(skip)]
    pub(crate) app_id: String,
}

/// Columns of a header row, by name.
struct Columns(HashMap<String, usize>);

impl Columns {
    fn new(header: &csv::StringRecord, clean: fn(&str) -> &str) -> Self {
        Self(
            header
                .iter()
                .enumerate()
                .map(|(i, name)| (clean(name).to_string(), i))
                .collect(),
        )
    }

    fn require(&self, names: &[&str]) -> Result<(), String> {
        match names.iter().find(|n| !self.0.contains_key(**n)) {
            Some(missing) => Err(format!("the bill has no `{missing}` column")),
            None => Ok(()),
        }
    }

    fn get<'r>(&self, record: &'r csv::StringRecord, name: &str, clean: fn(&str) -> &str) -> &'r str {
        self.0.get(name).and_then(|i| record.get(*i)).map(clean).unwrap_or("")
    }
}

fn wechat_value(field: &str) -> &str {
    let field = field.trim();
    field.strip_prefix('`').unwrap_or(field).trim()
}

/// `2026-12-03 12:00:05` (Beijing time) as RFC 3339.
fn beijing_time(text: &str, row: usize) -> Result<String, String> {
    crate::channels::beijing_time::beijing_rfc3339(text).ok_or_else(|| format!("row {row}: `{text:.40}` is not a time"))
}

/// A WeChat Pay trade bill (`GET /v3/bill/tradebill`, `bill_type` `ALL`): `SUCCESS` rows are
/// payments (`订单金额`), `REFUND` rows with `退款状态` `SUCCESS` refunds (`申请退款金额`);
/// other rows (`REVOKED`, refunds `PROCESSING`, `CLOSED` or `ABNORMAL`) are left out. The summary's `总交易单数` must count the rows read.
pub(crate) fn wechatpay_trade_bill(file: &[u8]) -> Result<Vec<BillRow>, String> {
    let file = file.strip_prefix("\u{feff}".as_bytes()).unwrap_or(file);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(file);
    let mut records = reader.records();
    let header = match records.next() {
        Some(Ok(h)) => h,
        Some(Err(e)) => return Err(format!("the bill's header: {e}")),
        None => return Err("the bill is empty".into()),
    };
    let cols = Columns::new(&header, wechat_value);
    cols.require(&["交易时间", "商户号", "微信订单号", "商户订单号", "交易状态", "订单金额"])?;
    let mut rows = Vec::new();
    let mut listed = 0usize;
    let mut summary = None;
    for (i, record) in records.enumerate() {
        let row = i + 2;
        let record = record.map_err(|e| format!("row {row}: {e}"))?;
        let first = record.get(0).map(wechat_value).unwrap_or("");
        if first == "总交易单数" {
            summary = Some(row);
            break;
        }
        listed += 1;
        let get = |name: &str| cols.get(&record, name, wechat_value);
        let amount = |name: &str| {
            parse_decimal_minor(get(name), 2).map_err(|e| format!("row {row}: {name} `{:.20}`: {e}", get(name)))
        };
        let kind = match get("交易状态") {
            "SUCCESS" => RowKind::Payment,
            // A refund still processing, closed or abnormal has not refunded anything yet.
            "REFUND" if get("退款状态") == "SUCCESS" => RowKind::Refund,
            _ => continue,
        };
        let out_trade_no = get("商户订单号").to_string();
        if out_trade_no.is_empty() {
            return Err(format!("row {row}: no 商户订单号"));
        }
        let (amount_minor, out_refund_no, refund_id) = match kind {
            RowKind::Payment => (amount("订单金额")?, None, None),
            RowKind::Refund => {
                let requested = if get("申请退款金额").is_empty() {
                    "退款金额"
                } else {
                    "申请退款金额"
                };
                let no = |name: &str| Some(get(name).to_string()).filter(|s| !s.is_empty() && s != "0");
                (amount(requested)?, no("商户退款单号"), no("微信退款单号"))
            }
        };
        rows.push(BillRow {
            kind,
            out_trade_no,
            channel_txn_id: get("微信订单号").to_string(),
            amount_minor,
            out_refund_no,
            refund_id,
            at: beijing_time(get("交易时间"), row)?,
            mch_id: get("商户号").to_string(),
            app_id: get("公众账号ID").to_string(),
        });
    }
    let Some(summary) = summary else {
        return Err("the bill ends without its summary (总交易单数): it is cut short".into());
    };
    let totals = reader
        .records()
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| format!("row {}: the summary has no values", summary + 1))?;
    let count = totals.get(0).map(wechat_value).unwrap_or("");
    if count.parse::<usize>().ok() != Some(listed) {
        return Err(format!(
            "the summary counts {count:.20} rows (总交易单数) but the bill lists {listed}"
        ));
    }
    Ok(rows)
}

fn alipay_value(field: &str) -> &str {
    field.trim_matches(|c: char| c.is_whitespace())
}

/// An Alipay business detail bill (`alipay.data.dataservice.bill.downloadurl.query`,
/// `bill_type` `trade`): the zip's detail file (the one listing `支付宝交易号`), GBK. `交易`
/// rows are payments (`订单金额（元）`), `退款` rows refunds (the absolute `订单金额（元）`, with
/// `退款批次号/请求号`).
pub(crate) fn alipay_trade_bill(zip: &[u8]) -> Result<Vec<BillRow>, String> {
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(zip)).map_err(|e| format!("the bill is not a zip file: {e}"))?;
    let mut details = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| format!("the bill's zip: {e}"))?;
        if !entry.is_file() {
            continue;
        }
        let mut bytes = Vec::new();
        entry
            .by_ref()
            .take(MAX_BILL_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("the bill's zip: {e}"))?;
        if bytes.len() > MAX_BILL_BYTES {
            return Err(format!("a file in the bill's zip exceeds {MAX_BILL_BYTES} bytes"));
        }
        let (text, _, malformed) = encoding_rs::GBK.decode(&bytes);
        if malformed {
            return Err("a file in the bill's zip is not GBK text".into());
        }
        if text.lines().any(|l| alipay_value(l).starts_with("支付宝交易号")) {
            details.push(text.into_owned());
        }
    }
    let text = match details.as_slice() {
        [one] => one,
        [] => return Err("the bill's zip holds no detail file (one listing 支付宝交易号)".into()),
        _ => return Err("the bill's zip holds more than one detail file".into()),
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let mut records = reader.records();
    let header = loop {
        match records.next() {
            Some(Ok(h)) if h.get(0).map(alipay_value) == Some("支付宝交易号") => break h,
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("the bill's header: {e}")),
            None => return Err("the detail file has no header".into()),
        }
    };
    let cols = Columns::new(&header, alipay_value);
    let amount_col = "订单金额（元）";
    cols.require(&["支付宝交易号", "商户订单号", "业务类型", "完成时间", amount_col])?;
    let mut rows = Vec::new();
    for (i, record) in records.enumerate() {
        let row = i + 1;
        let record = record.map_err(|e| format!("detail row {row}: {e}"))?;
        if record.iter().all(|f| alipay_value(f).is_empty()) {
            continue;
        }
        let get = |name: &str| cols.get(&record, name, alipay_value);
        let kind = match get("业务类型") {
            "交易" => RowKind::Payment,
            "退款" => RowKind::Refund,
            _ => continue,
        };
        let amount = parse_signed_decimal_minor(get(amount_col), 2)
            .map_err(|e| format!("detail row {row}: {amount_col} `{:.20}`: {e}", get(amount_col)))?;
        let out_trade_no = get("商户订单号").to_string();
        if out_trade_no.is_empty() {
            return Err(format!("detail row {row}: no 商户订单号"));
        }
        let out_refund_no = match kind {
            RowKind::Refund => Some(get("退款批次号/请求号").to_string()).filter(|s| !s.is_empty()),
            RowKind::Payment => None,
        };
        rows.push(BillRow {
            kind,
            out_trade_no,
            channel_txn_id: get("支付宝交易号").to_string(),
            amount_minor: amount
                .checked_abs()
                .ok_or_else(|| format!("detail row {row}: amount out of range"))?,
            out_refund_no,
            refund_id: None,
            at: beijing_time(get("完成时间"), row)?,
            mch_id: String::new(),
            app_id: String::new(),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WECHAT: &str = "\u{feff}交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\n\
`2026-12-03 12:00:05,`wxd678efh567hg6787,`1900000001,`0,`,`4200000001202612031234567890,`T-1,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`SUCCESS,`OTHERS,`CNY,`88.80,`0.00,`0,`0,`0.00,`0.00,`,`,`Shirt,`,`0.53000,`0.60%,`88.80,`0.00,`\n\
`2026-12-03 18:30:00,`wxd678efh567hg6787,`1900000001,`0,`,`4200000001202612031234567890,`T-1,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`50300000012026120300000001,`T-1-R1,`10.00,`0.00,`ORIGINAL,`SUCCESS,`Shirt,`,`-0.06000,`0.60%,`0.00,`10.00,`\n\
`2026-12-03 19:00:00,`wxd678efh567hg6787,`1900000001,`0,`,`4200000001202612039999999999,`T-2,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`MICROPAY,`REVOKED,`OTHERS,`CNY,`0.00,`0.00,`0,`0,`0.00,`0.00,`,`,`Cap,`,`0.00000,`0.60%,`5.00,`0.00,`\n\
总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\n\
`3,`88.80,`10.00,`0.00,`0.47000,`93.80,`10.00\n";

    #[test]
    fn a_wechat_bill_gives_payments_and_refunds_in_exact_minor_units() {
        let rows = wechatpay_trade_bill(WECHAT.as_bytes()).unwrap();
        assert_eq!(rows.len(), 2, "the REVOKED row is left out");
        assert_eq!(
            (rows[0].kind, rows[0].out_trade_no.as_str(), rows[0].amount_minor),
            (RowKind::Payment, "T-1", 8880)
        );
        assert_eq!(rows[0].channel_txn_id, "4200000001202612031234567890");
        assert_eq!(rows[0].at, "2026-12-03T12:00:05+08:00");
        assert_eq!(rows[0].mch_id, "1900000001");
        let refund = &rows[1];
        assert_eq!((refund.kind, refund.amount_minor), (RowKind::Refund, 1000));
        assert_eq!(refund.out_refund_no.as_deref(), Some("T-1-R1"));
        assert_eq!(refund.refund_id.as_deref(), Some("50300000012026120300000001"));
    }

    #[test]
    fn a_wechat_refund_not_yet_successful_is_not_a_refund() {
        for state in ["PROCESSING", "CLOSED", "ABNORMAL"] {
            let bill = WECHAT.replace("`ORIGINAL,`SUCCESS,", &format!("`ORIGINAL,`{state},"));
            let rows = wechatpay_trade_bill(bill.as_bytes()).unwrap();
            assert_eq!(rows.len(), 1, "{state}");
            assert_eq!(rows[0].kind, RowKind::Payment);
        }
    }

    #[test]
    fn a_wechat_bill_cut_short_or_with_a_bad_amount_is_refused_whole() {
        let cut = &WECHAT[..WECHAT.find("总交易单数").unwrap()];
        assert!(wechatpay_trade_bill(cut.as_bytes()).unwrap_err().contains("cut short"));
        let miscounted = WECHAT.replace("`3,`88.80", "`4,`88.80");
        assert!(wechatpay_trade_bill(miscounted.as_bytes())
            .unwrap_err()
            .contains("counts 4 rows"));
        let float = WECHAT.replacen("`0.60%,`88.80,", "`0.60%,`88.805,", 1);
        let e = wechatpay_trade_bill(float.as_bytes()).unwrap_err();
        assert!(e.starts_with("row 2: 订单金额"), "{e}");
        assert!(wechatpay_trade_bill(b"").unwrap_err().contains("empty"));
        assert!(wechatpay_trade_bill("a,b\n".as_bytes())
            .unwrap_err()
            .contains("no `交易时间` column"));
    }

    pub(crate) fn alipay_zip(detail: &str) -> Vec<u8> {
        use std::io::Write;
        let mut out = std::io::Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default();
        for (name, text) in [
            ("20880000000000000156_20261203_业务明细.csv", detail),
            (
                "20880000000000000156_20261203_业务明细(汇总).csv",
                "#支付宝业务汇总查询\n门店编号,门店名称,交易订单总笔数\n",
            ),
        ] {
            zip.start_file(name, options).unwrap();
            zip.write_all(&encoding_rs::GBK.encode(text).0).unwrap();
        }
        zip.finish().unwrap();
        out.into_inner()
    }

    const ALIPAY: &str = "#支付宝业务明细查询\n#账号：[20880000000000000156]\n#起始日期：[2026年12月03日 00:00:00]   终止日期：[2026年12月04日 00:00:00]\n#-----------------------------------------业务明细列表----------------------------------------\n\
支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注\n\
2026120322001000000000000001\t,A-1\t,交易\t,T恤\t,2026-12-03 11:59:00\t,2026-12-03 12:00:05\t,\t,\t,\t,\t,159****5620\t,19.99\t,19.99\t,0.00\t,0.00\t,0.00\t,0.00\t,0.00\t,\t,0.00\t,0.00\t,\t,-0.12\t,0.00\t,\n\
2026120322001000000000000001\t,A-1\t,退款\t,T恤\t,2026-12-03 11:59:00\t,2026-12-03 20:00:00\t,\t,\t,\t,\t,159****5620\t,-5.00\t,-5.00\t,0.00\t,0.00\t,0.00\t,0.00\t,0.00\t,\t,0.00\t,0.00\t,A-1-R1\t,0.03\t,0.00\t,\n\
#-----------------------------------------业务明细列表结束------------------------------------\n#交易合计：1笔，商家实收共19.99元，商家优惠共0.00元\n#退款合计：1笔，商家实收退款共-5.00元，商家优惠退款共0.00元\n#导出时间：[2026年12月04日 09:00:00]\n";

    #[test]
    fn an_alipay_zip_of_gbk_csv_gives_payments_and_refunds_in_exact_minor_units() {
        let rows = alipay_trade_bill(&alipay_zip(ALIPAY)).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].kind, rows[0].out_trade_no.as_str(), rows[0].amount_minor),
            (RowKind::Payment, "A-1", 1999),
            "19.99 yuan is 1999 fen, never 1998.99…"
        );
        assert_eq!(rows[0].at, "2026-12-03T12:00:05+08:00");
        assert_eq!(rows[1].kind, RowKind::Refund);
        assert_eq!(rows[1].amount_minor, 500);
        assert_eq!(rows[1].out_refund_no.as_deref(), Some("A-1-R1"));
    }

    #[test]
    fn an_alipay_bill_that_is_not_a_zip_of_one_detail_file_is_refused() {
        assert!(alipay_trade_bill(b"PK but not").unwrap_err().contains("not a zip"));
        let none = alipay_zip("#只有注释\n");
        assert!(alipay_trade_bill(&none).unwrap_err().contains("no detail file"));
        let bad = alipay_zip(&ALIPAY.replace(",19.99\t,19.99", ",19.9.9\t,19.99"));
        assert!(alipay_trade_bill(&bad)
            .unwrap_err()
            .starts_with("detail row 1: 订单金额"));
    }
}

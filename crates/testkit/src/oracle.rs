//! Reference predicates for the field rules of docs/contract.md, written from the contract alone
//! (regular expressions plus a calendar), never from the decoder: tests that derive what is
//! valid from the code under test cannot see it accept too much.
//!
//! Shared by the near-miss property tests (`crates/format/src/submission/oracle_tests.rs`) and
//! the fuzz target (`fuzz/fuzz_targets/decode.rs`), so it depends only on `regex-lite`,
//! `serde_json` and `base64`.

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use regex_lite::Regex;
use serde_json::Value;

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a valid pattern")
}

static UUID: LazyLock<Regex> =
    LazyLock::new(|| regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"));

/// One octet 0-255, no leading zero.
const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])";

static IPV4: LazyLock<Regex> = LazyLock::new(|| regex(&format!("^{OCTET}\\.{OCTET}\\.{OCTET}\\.{OCTET}$")));

/// RFC 3339 `date-time` with the offset optional, `T` and `Z` upper-case only, 1-9 fraction
/// digits, seconds 00-59. Day of month is range-checked here, against the month in [`time_created`].
static TIME_CREATED: LazyLock<Regex> = LazyLock::new(|| {
    regex(concat!(
        "^([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
        "T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]",
        "(\\.[0-9]{1,9})?",
        "(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?$",
    ))
});

/// Standard alphabet, padded; the bits a final group leaves over must be zero (RFC 4648 §3.5
/// lets a decoder refuse them otherwise, and the standard engine does).
static BASE64: LazyLock<Regex> = LazyLock::new(|| {
    regex(concat!(
        "^([A-Za-z0-9+/]{4})*",
        "([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$",
    ))
});

/// A UUID in the hyphenated 8-4-4-4-12 hex form, either case.
pub fn uuid(text: &str) -> bool {
    UUID.is_match(text)
}

/// A dotted-quad IPv4 address: four decimal octets 0-255, no leading zeros, nothing else.
pub fn ipv4(text: &str) -> bool {
    IPV4.is_match(text)
}

/// `YYYY-MM-DDTHH:MM:SS[.F{1,9}][Z|±HH:MM]`, on a day that exists.
pub fn time_created(text: &str) -> bool {
    let Some(fields) = TIME_CREATED.captures(text) else {
        return false;
    };
    let number = |i: usize| fields.get(i).and_then(|m| m.as_str().parse::<u32>().ok());
    let (Some(year), Some(month), Some(day)) = (number(1), number(2), number(3)) else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    day <= days_in_month
}

/// A JSON integer (no sign, fraction or exponent) in 0..=65535.
pub fn port(value: &Value) -> bool {
    value.as_u64().is_some_and(|v| v <= 65535)
}

/// Standard base64 with padding, as the whole text.
pub fn base64(text: &str) -> bool {
    BASE64.is_match(text)
}

/// The blanks around a body that the contract's "first non-blank byte" skips: ASCII whitespace.
pub fn trim_body(body: &str) -> &str {
    body.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{c}'))
}

/// For a body the decoder accepted: every field rule of the contract holds. Reads the document
/// with `serde_json` (not the decoder's own reader) and names the first rule broken.
pub fn accepted_body_obeys_the_rules(body: &str) -> Result<(), String> {
    let body = trim_body(body);
    let json = if body.starts_with('{') {
        body.as_bytes().to_vec()
    } else {
        if !base64(body) {
            return Err(format!("body is not standard padded base64: {body:?}"));
        }
        STANDARD
            .decode(body)
            .map_err(|e| format!("base64 the oracle accepts does not decode: {e}"))?
    };
    let document: Value = serde_json::from_slice(&json).map_err(|e| format!("not JSON: {e}"))?;
    let string = |v: &Value, name: &str| -> Result<String, String> {
        v.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("`{name}` is not a string"))
    };
    for name in ["submission_id", "device_id"] {
        let id = string(&document, name)?;
        if !uuid(&id) {
            return Err(format!("`{name}` {id:?} is not a hyphenated UUID"));
        }
    }
    let time = string(&document, "time_created")?;
    if !time_created(&time) {
        return Err(format!("`time_created` {time:?} breaks the grammar"));
    }
    let events = document
        .get("events")
        .and_then(Value::as_object)
        .ok_or("`events` is not an object")?;
    for (kind, items) in events {
        let items = items.as_array().ok_or_else(|| format!("`{kind}` is not an array"))?;
        match kind.as_str() {
            "new_process" => {
                for item in items {
                    string(item, "cmdl")?;
                    string(item, "user")?;
                }
            }
            "network_connection" => {
                for item in items {
                    for name in ["source_ip", "destination_ip"] {
                        let ip = string(item, name)?;
                        if !ipv4(&ip) {
                            return Err(format!("`{name}` {ip:?} is not a dotted quad"));
                        }
                    }
                    let port_value = item.get("destination_port").unwrap_or(&Value::Null);
                    if !port(port_value) {
                        return Err(format!(
                            "`destination_port` {port_value} is not a JSON integer 0..=65535"
                        ));
                    }
                }
            }
            other => return Err(format!("unknown event type {other:?}")),
        }
    }
    Ok(())
}

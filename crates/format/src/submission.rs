//! Submissions: decode an SQS message body, validate it as a whole, and hand back the typed
//! submission whose events keep document order.
//!
//! Pure domain code: no AWS types, no I/O, no clock (the caller passes "now"), so every rule of
//! the specification is unit- and property-tested here alone. A submission is valid only as a
//! whole: the first broken rule rejects all of it, with one [`Rejection`] saying which rule.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;

use base64::Engine as _;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use uuid::Uuid;

/// How many characters of an offending key a rejection keeps: a hostile key can be huge.
const MAX_KEY_IN_REASON: usize = 64;

/// Why a submission was dropped. One variant per rule of the specification; `Display` is the
/// reason logged, [`Rejection::label`] the metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("body is not valid base64: {0}")]
    NotBase64(String),
    #[error("body is not UTF-8 text")]
    NotUtf8,
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("a JSON object repeats a key: {0}")]
    DuplicateKey(String),
    #[error("document is not a JSON object")]
    NotAnObject,
    #[error("required field `{0}` is missing")]
    MissingField(String),
    #[error("field `{0}` is null")]
    NullField(String),
    #[error("field `{path}` must be {expected}")]
    WrongType { path: String, expected: &'static str },
    #[error("field `{0}` is not a hyphenated UUID")]
    InvalidUuid(&'static str),
    #[error("field `time_created` is not an ISO 8601 date-time")]
    InvalidTimestamp,
    #[error("field `time_created` is before {0}")]
    TimestampTooOld(NaiveDateTime),
    #[error("field `time_created` is more than {0} h ahead of backend UTC")]
    TimestampInFuture(i64),
    #[error("`events` holds an unknown event type `{0}`")]
    UnknownEventType(String),
    #[error("`{0}` is not an object")]
    ItemNotObject(String),
    #[error("field `{0}` is not a dotted-quad IPv4 address")]
    InvalidIpv4(String),
    #[error("field `{0}` is negative")]
    PortNegative(String),
    #[error("field `{0}` is not an integer")]
    PortNotInteger(String),
    #[error("field `{0}` is above 65535")]
    PortOutOfRange(String),
    #[error("event {index} would be a {bytes}-byte Kinesis record, above the {limit}-byte limit")]
    RecordTooLarge { index: usize, bytes: usize, limit: usize },
}

/// Declares each rejection's metric label once: [`Rejection::label`] and
/// [`Rejection::LABELS`] both come from this one list.
macro_rules! labels {
    ($($variant:ident => $label:literal,)*) => {
        impl Rejection {
            /// Every label [`Rejection::label`] can return, for metrics and documentation.
            pub const LABELS: [&'static str; [$($label),*].len()] = [$($label),*];

            /// A short, fixed label: the metric label for drops by reason (bounded cardinality).
            pub fn label(&self) -> &'static str {
                match self {
                    $(Rejection::$variant { .. } => $label,)*
                }
            }
        }
    };
}

labels! {
    NotBase64 => "not_base64",
    NotUtf8 => "not_utf8",
    NotJson => "not_json",
    DuplicateKey => "duplicate_key",
    NotAnObject => "not_an_object",
    MissingField => "missing_field",
    NullField => "null_field",
    WrongType => "wrong_type",
    InvalidUuid => "invalid_uuid",
    InvalidTimestamp => "invalid_timestamp",
    TimestampTooOld => "timestamp_too_old",
    TimestampInFuture => "timestamp_in_future",
    UnknownEventType => "unknown_event_type",
    ItemNotObject => "item_not_object",
    InvalidIpv4 => "invalid_ipv4",
    PortNegative => "port_negative",
    PortNotInteger => "port_not_integer",
    PortOutOfRange => "port_out_of_range",
    RecordTooLarge => "record_too_large",
}

/// The plausibility window for `time_created`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    /// Earliest accepted value (compared with the device's wall-clock time as written).
    pub not_before: NaiveDateTime,
    /// How far ahead of backend UTC a value may be: device local time leads UTC by up to 14 h,
    /// and clocks drift, hence a default of 26 h.
    pub max_ahead: TimeDelta,
}

impl Default for TimeBounds {
    fn default() -> Self {
        TimeBounds {
            not_before: NaiveDate::from_ymd_opt(2000, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .unwrap_or_default(),
            max_ahead: TimeDelta::hours(26),
        }
    }
}

/// A validated submission. Ids are parsed (and so printed lowercase); `time_created` is kept
/// exactly as the sensor wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub submission_id: Uuid,
    pub device_id: Uuid,
    pub time_created: String,
    /// Events in document order: event-type keys as they appear, each array in its order.
    pub events: Vec<EventData>,
}

/// The type-specific part of one event; only the known fields survive validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventData {
    NewProcess {
        cmdl: String,
        user: String,
    },
    NetworkConnection {
        source_ip: Ipv4Addr,
        destination_ip: Ipv4Addr,
        destination_port: u16,
    },
}

impl EventData {
    pub const NEW_PROCESS: &'static str = "new_process";
    pub const NETWORK_CONNECTION: &'static str = "network_connection";

    /// The event type name, as in the submission and the published event.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventData::NewProcess { .. } => Self::NEW_PROCESS,
            EventData::NetworkConnection { .. } => Self::NETWORK_CONNECTION,
        }
    }
}

/// Decodes and validates one SQS message body.
///
/// The body is base64 (standard alphabet, padded) of a UTF-8 JSON document, or, when its first
/// non-blank byte is `{`, the JSON document itself. `now` is backend UTC time.
/// The most heap, per body byte, that decoding a body and building its records
/// ([`crate::event::to_records`]) takes at its peak, records included, for any body: a caller
/// that reserves this much before decoding never holds more than it reserved. The records of
/// the smallest events take about 11 per body byte (each record repeats the ids and times), the
/// parsed document, freed before the records are built, the rest. Measured for the shapes that
/// allocate most by the collector's `tests/decode_memory.rs`.
pub const DECODE_HEAP_PER_BODY_BYTE: usize = 40;

pub fn decode(body: &str, bounds: &TimeBounds, now: DateTime<Utc>) -> Result<Submission, Rejection> {
    let text = unwrap_body(body)?;
    if let Some(submission) = direct::read(&text, bounds, now) {
        return Ok(submission);
    }
    let document = parse_strict_json(&text)?;
    validate(document, bounds, now)
}

/// Returns the JSON text carried by a body: the body itself (already UTF-8), or its base64
/// decoding, which must be UTF-8.
fn unwrap_body(body: &str) -> Result<Cow<'_, str>, Rejection> {
    let trimmed = body.trim_ascii();
    if trimmed.starts_with('{') {
        return Ok(Cow::Borrowed(trimmed));
    }
    // The vectorised decoder takes the bodies; the scalar one, which names the offending
    // symbol and its offset, gives a refused body its reason.
    let bytes = base64_simd::STANDARD.decode_to_vec(trimmed).map_err(|_| {
        let reason = match base64::engine::general_purpose::STANDARD.decode(trimmed) {
            Err(e) => e.to_string(),
            Ok(_) => "not in the canonical padded form".to_owned(),
        };
        Rejection::NotBase64(reason)
    })?;
    String::from_utf8(bytes).map(Cow::Owned).map_err(|_| Rejection::NotUtf8)
}

/// A JSON value that keeps object keys in document order and refuses repeated keys, which
/// `serde_json::Value` would silently collapse to the last one. Strings and keys borrow from
/// the text unless they hold escapes: a document is parsed once per message, and copying
/// every key and value was most of its cost.
#[derive(Debug, Clone, PartialEq)]
enum Json<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

/// Up to this many keys, an object is searched for a repeated key one by one; beyond, with a
/// hash set, so that a hostile object with a huge number of keys stays linear.
const KEYS_SCANNED_LINEARLY: usize = 16;

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json<'de>, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut entries: Vec<(Cow<'de, str>, Json<'de>)> = Vec::new();
        let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(Key(key)) = map.next_key()? {
            let repeated = if entries.len() < KEYS_SCANNED_LINEARLY {
                entries.iter().any(|(k, _)| *k == key)
            } else {
                if seen.is_empty() {
                    seen.extend(entries.iter().map(|(k, _)| k.clone()));
                }
                !seen.insert(key.clone())
            };
            if repeated {
                return Err(de::Error::custom(format!(
                    "duplicate key \"{}\"",
                    truncate(&key, MAX_KEY_IN_REASON)
                )));
            }
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Json::Object(entries))
    }
}

/// An object key, borrowed from the text when it holds no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor).map(Key)
    }
}

/// A JSON string, borrowed from the text when it holds no escapes (`Cow`'s own `Deserialize`
/// always copies); any other value is refused.
struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

/// Parses JSON text; a repeated key becomes [`Rejection::DuplicateKey`], any other failure
/// [`Rejection::NotJson`].
fn parse_strict_json(text: &str) -> Result<Json<'_>, Rejection> {
    serde_json::from_str::<Json>(text).map_err(|e| match e.classify() {
        // The visitor's only custom error is the repeated key; syntax and EOF errors are the
        // parser's own.
        serde_json::error::Category::Data => Rejection::DuplicateKey(e.to_string()),
        _ => Rejection::NotJson(e.to_string()),
    })
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

/// Where an object sits in the document, for rejection reasons. Formatted only when a rule is
/// broken: every event passes through here.
#[derive(Clone, Copy)]
enum Path<'a> {
    Top,
    Item { type_name: &'a str, index: usize },
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Path::Top => Ok(()),
            Path::Item { type_name, index } => write!(f, "events.{type_name}[{index}]"),
        }
    }
}

/// Fields of one JSON object, looked up by name, with the path used in rejection reasons.
struct Fields<'a> {
    path: Path<'a>,
    entries: &'a [(Cow<'a, str>, Json<'a>)],
}

impl<'a> Fields<'a> {
    fn field_path(&self, name: &str) -> String {
        match self.path {
            Path::Top => name.to_owned(),
            item => format!("{item}.{name}"),
        }
    }

    /// The value of a required field: present and not null.
    fn required(&self, name: &str) -> Result<&'a Json<'a>, Rejection> {
        match self.entries.iter().find(|(k, _)| k == name) {
            None => Err(Rejection::MissingField(self.field_path(name))),
            Some((_, Json::Null)) => Err(Rejection::NullField(self.field_path(name))),
            Some((_, value)) => Ok(value),
        }
    }

    fn string(&self, name: &str) -> Result<&'a str, Rejection> {
        match self.required(name)? {
            Json::String(s) => Ok(s),
            _ => Err(Rejection::WrongType {
                path: self.field_path(name),
                expected: "a string",
            }),
        }
    }

    fn ipv4(&self, name: &str) -> Result<Ipv4Addr, Rejection> {
        let text = self.string(name)?;
        parse_dotted_quad(text).ok_or_else(|| Rejection::InvalidIpv4(self.field_path(name)))
    }

    fn port(&self, name: &str) -> Result<u16, Rejection> {
        let number = match self.required(name)? {
            Json::Number(n) => n,
            _ => {
                return Err(Rejection::WrongType {
                    path: self.field_path(name),
                    expected: "a JSON integer",
                });
            }
        };
        if let Some(v) = number.as_u64() {
            return u16::try_from(v).map_err(|_| Rejection::PortOutOfRange(self.field_path(name)));
        }
        if number.is_i64() {
            return Err(Rejection::PortNegative(self.field_path(name)));
        }
        // A float: written with a fraction or an exponent, or an integer too large for u64.
        // `-0` arrives here too, as the float -0.0: written with a minus sign, it is negative.
        let v = number.as_f64().unwrap_or(f64::NAN);
        if v.is_sign_negative() {
            Err(Rejection::PortNegative(self.field_path(name)))
        } else if v > f64::from(u16::MAX) {
            Err(Rejection::PortOutOfRange(self.field_path(name)))
        } else {
            Err(Rejection::PortNotInteger(self.field_path(name)))
        }
    }
}

fn validate(document: Json<'_>, bounds: &TimeBounds, now: DateTime<Utc>) -> Result<Submission, Rejection> {
    let Json::Object(entries) = &document else {
        return Err(Rejection::NotAnObject);
    };
    let top = Fields {
        path: Path::Top,
        entries,
    };
    let submission_id = parse_uuid(top.string("submission_id")?).ok_or(Rejection::InvalidUuid("submission_id"))?;
    let device_id = parse_uuid(top.string("device_id")?).ok_or(Rejection::InvalidUuid("device_id"))?;
    let time_created = top.string("time_created")?;
    check_time_created(time_created, bounds, now)?;

    let Json::Object(by_type) = top.required("events")? else {
        return Err(Rejection::WrongType {
            path: "events".to_owned(),
            expected: "an object",
        });
    };
    let mut events = Vec::new();
    for (type_name, items) in by_type {
        let type_name: &str = type_name;
        let parse_item: fn(&Fields) -> Result<EventData, Rejection> = match type_name {
            EventData::NEW_PROCESS => |f| {
                Ok(EventData::NewProcess {
                    cmdl: f.string("cmdl")?.to_owned(),
                    user: f.string("user")?.to_owned(),
                })
            },
            EventData::NETWORK_CONNECTION => |f| {
                Ok(EventData::NetworkConnection {
                    source_ip: f.ipv4("source_ip")?,
                    destination_ip: f.ipv4("destination_ip")?,
                    destination_port: f.port("destination_port")?,
                })
            },
            other => return Err(Rejection::UnknownEventType(truncate(other, MAX_KEY_IN_REASON))),
        };
        let Json::Array(items) = items else {
            return Err(Rejection::WrongType {
                path: format!("events.{type_name}"),
                expected: "an array",
            });
        };
        events.reserve(items.len());
        for (index, item) in items.iter().enumerate() {
            let path = Path::Item { type_name, index };
            let Json::Object(fields) = item else {
                return Err(Rejection::ItemNotObject(path.to_string()));
            };
            events.push(parse_item(&Fields { path, entries: fields })?);
        }
    }
    Ok(Submission {
        submission_id,
        device_id,
        time_created: time_created.to_owned(),
        events,
    })
}

/// Parses a UUID in the hyphenated 8-4-4-4-12 form only (either case); `Uuid::parse_str` alone
/// would also take the simple, braced and URN forms.
fn parse_uuid(text: &str) -> Option<Uuid> {
    let bytes = text.as_bytes();
    let shape_ok = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if shape_ok { Uuid::parse_str(text).ok() } else { None }
}

/// Parses four decimal octets 0-255 without leading zeros, signs or spaces.
fn parse_dotted_quad(text: &str) -> Option<Ipv4Addr> {
    // One pass over the bytes: this runs twice per network event.
    let mut octets = [0u8; 4];
    let mut octet = 0;
    let (mut value, mut digits) = (0u16, 0);
    for &b in text.as_bytes() {
        match b {
            b'0'..=b'9' => {
                // At most three digits, and no leading zero.
                if digits == 3 || (digits == 1 && value == 0) {
                    return None;
                }
                value = value * 10 + u16::from(b - b'0');
                digits += 1;
            }
            b'.' if digits > 0 && octet < 3 => {
                octets[octet] = u8::try_from(value).ok()?;
                octet += 1;
                (value, digits) = (0, 0);
            }
            _ => return None,
        }
    }
    if octet != 3 || digits == 0 {
        return None;
    }
    octets[3] = u8::try_from(value).ok()?;
    Some(Ipv4Addr::from(octets))
}

impl Submission {
    /// `time_created` as UTC: with its offset applied; without one (device local time) read as
    /// UTC, so off by the device's UTC offset. `None` only if it does not parse, which a
    /// validated submission's always does.
    pub fn time_created_utc(&self) -> Option<DateTime<Utc>> {
        let (wall_clock, offset) = parse_time_created(&self.time_created)?;
        let utc = match offset {
            Some(offset) => wall_clock.checked_sub_offset(offset)?,
            None => wall_clock,
        };
        Some(utc.and_utc())
    }
}

/// Checks that `time_created` is a strict RFC 3339 date-time, with or without offset (see
/// [`parse_time_created`]), and plausible: a device clock far in the past or future means the
/// data cannot be placed in time.
fn check_time_created(text: &str, bounds: &TimeBounds, now: DateTime<Utc>) -> Result<(), Rejection> {
    let (wall_clock, offset) = parse_time_created(text).ok_or(Rejection::InvalidTimestamp)?;
    // No offset: device local time, whose lead over UTC is bounded by `max_ahead`.
    let as_utc = match offset {
        Some(offset) => wall_clock
            .checked_sub_offset(offset)
            .ok_or(Rejection::InvalidTimestamp)?,
        None => wall_clock,
    };
    if wall_clock < bounds.not_before {
        return Err(Rejection::TimestampTooOld(bounds.not_before));
    }
    if as_utc > now.naive_utc() + bounds.max_ahead {
        return Err(Rejection::TimestampInFuture(bounds.max_ahead.num_hours()));
    }
    Ok(())
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.F{1,9}][Z|±HH:MM]`: every field exactly its digit count, the
/// date and time calendar-valid, seconds 00-59, upper-case `T` and `Z` only.
///
/// By hand because chrono's format parser is lenient where sensors never are: it skips blanks,
/// takes one digit for two and reads signed years of any length, and consumers downstream
/// receive the value verbatim.
fn parse_time_created(text: &str) -> Option<(NaiveDateTime, Option<FixedOffset>)> {
    let mut cursor = Cursor(text.as_bytes());
    let year = cursor.digits(4)?;
    cursor.expect(b'-')?;
    let month = cursor.digits(2)?;
    cursor.expect(b'-')?;
    let day = cursor.digits(2)?;
    cursor.expect(b'T')?;
    let hour = cursor.digits(2)?;
    cursor.expect(b':')?;
    let minute = cursor.digits(2)?;
    cursor.expect(b':')?;
    let second = cursor.digits(2)?;
    let mut nanos = 0;
    if cursor.eat(b'.') {
        let count = cursor.0.iter().take_while(|b| b.is_ascii_digit()).count();
        if !(1..=9).contains(&count) {
            return None;
        }
        // Scaled to nanoseconds: `.5` is 500 000 000 ns.
        nanos = cursor.digits(count)? * 10u32.pow(9 - count as u32);
    }
    let offset = match cursor.0 {
        [] => None,
        [b'Z'] => Some(FixedOffset::east_opt(0)?),
        [sign @ (b'+' | b'-'), ..] => {
            let sign = if *sign == b'-' { -1 } else { 1 };
            cursor.0 = &cursor.0[1..];
            let hours = cursor.digits(2)?;
            cursor.expect(b':')?;
            let minutes = cursor.digits(2)?;
            if hours > 23 || minutes > 59 || !cursor.0.is_empty() {
                return None;
            }
            let seconds = i32::try_from(hours * 3600 + minutes * 60).ok()?;
            Some(FixedOffset::east_opt(sign * seconds)?)
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    // chrono takes second 59 with nanoseconds above a billion as a leap second; ours are below.
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    Some((date.and_time(time), offset))
}

/// The unread rest of an ASCII text, consumed from the front.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    /// Exactly `count` ASCII digits as a number (at most 9, so it fits).
    fn digits(&mut self, count: usize) -> Option<u32> {
        let field = self.0.get(..count)?;
        if !field.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.0 = &self.0[count..];
        Some(field.iter().fold(0, |v, d| v * 10 + u32::from(d - b'0')))
    }

    fn eat(&mut self, byte: u8) -> bool {
        match self.0.split_first() {
            Some((first, rest)) if *first == byte => {
                self.0 = rest;
                true
            }
            _ => false,
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }
}

mod direct;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod oracle_tests;

/// The parser's own shortcuts: borrowed strings, the two ways of finding a repeated key, paths
/// formatted only on failure, the byte-level dotted-quad parser.
#[cfg(test)]
mod parser_tests {
    use super::*;

    fn object_with_keys(n: usize, repeat_at: Option<usize>) -> String {
        let fields: Vec<String> = (0..n)
            .map(|i| match repeat_at {
                Some(at) if i == at => r#""k3":0"#.to_owned(),
                _ => format!(r#""k{i}":0"#),
            })
            .collect();
        format!("{{{}}}", fields.join(","))
    }

    #[test]
    fn repeated_keys_are_found_in_small_and_large_objects() {
        for (n, at) in [(5, 4), (16, 15), (17, 16), (40, 39), (1000, 500)] {
            let text = object_with_keys(n, Some(at));
            let err = parse_strict_json(&text).unwrap_err();
            assert!(
                matches!(&err, Rejection::DuplicateKey(m) if m.starts_with(r#"duplicate key "k3" at line 1 column "#)),
                "{n} keys, repeat at {at}: {err:?}"
            );
            assert!(
                parse_strict_json(&object_with_keys(n, None)).is_ok(),
                "{n} distinct keys"
            );
        }
    }

    #[test]
    fn keys_are_compared_after_unescaping() {
        let err = parse_strict_json(r#"{"a":1,"\u0061":2}"#).unwrap_err();
        assert_eq!(err.label(), "duplicate_key");
        let many: Vec<String> = (0..30).map(|i| format!(r#""k{i}":0"#)).collect();
        let err = parse_strict_json(&format!(r#"{{{},"k\u0031":1}}"#, many.join(","))).unwrap_err();
        assert_eq!(err.label(), "duplicate_key");
    }

    #[test]
    fn strings_borrow_unless_escaped() {
        let Json::Object(entries) = parse_strict_json(r#"{"plain":"text","esc\"aped":"a\nb"}"#).unwrap() else {
            panic!("an object");
        };
        assert!(matches!(&entries[0].0, Cow::Borrowed("plain")));
        assert!(matches!(&entries[0].1, Json::String(Cow::Borrowed("text"))));
        assert_eq!(entries[1].0, "esc\"aped");
        assert!(matches!(&entries[1].1, Json::String(Cow::Owned(s)) if s == "a\nb"));
    }

    #[test]
    fn item_paths_name_the_type_and_the_position() {
        let fields = Fields {
            path: Path::Item {
                type_name: "network_connection",
                index: 12,
            },
            entries: &[],
        };
        assert_eq!(
            fields.required("source_ip").unwrap_err(),
            Rejection::MissingField("events.network_connection[12].source_ip".to_owned())
        );
        let top = Fields {
            path: Path::Top,
            entries: &[],
        };
        assert_eq!(
            top.required("device_id").unwrap_err(),
            Rejection::MissingField("device_id".to_owned())
        );
    }

    #[test]
    fn dotted_quads_parse_as_the_standard_parser_does_for_canonical_text() {
        for text in ["0.0.0.0", "255.255.255.255", "10.0.12.1", "192.168.0.2", "1.22.133.9"] {
            assert_eq!(parse_dotted_quad(text), text.parse().ok(), "{text}");
        }
        for text in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "1.2.3.999",
            "01.2.3.4",
            "1.2.3.00",
            "1..3.4",
            "1.2.3.4.",
            " 1.2.3.4",
            "1.2.3.+4",
            "1.2.3.-4",
            "1.2.3.4a",
            "1.2.3.٣",
            "1000.1.1.1",
        ] {
            assert_eq!(parse_dotted_quad(text), None, "{text:?}");
        }
    }
}

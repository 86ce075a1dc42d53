//! Hostile submission bodies, each with the verdict docs/contract.md requires and the reason for it.
//!
//! Shared by the decoder's table test (`crates/format/src/submission/tests.rs`), the end-to-end
//! test (`tests/hostile_inputs.rs`) and the fuzzer's seed corpus (`fuzz/`), so it depends on
//! nothing but `base64` and `serde_json`. Documents are written as JSON text by hand: the point is
//! bytes that no well-behaved serialiser would produce.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde_json::{Value, json};

/// The largest SQS message body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The largest JSON document whose base64 still fits in [`MAX_BODY_BYTES`].
pub const MAX_BASE64_PAYLOAD: usize = MAX_BODY_BYTES / 4 * 3;

const DEVICE_ID: &str = "31980191-fa99-4768-8a7b-0e81397ca6ef";
const TIME_CREATED: &str = "2021-03-28T15:44:18.592840";
const EVENTS: &str = r#"{"new_process":[{"cmdl":"notepad.exe","user":"john"}],"network_connection":[{"source_ip":"192.168.0.2","destination_ip":"23.13.252.39","destination_port":43696}]}"#;

/// What the collector must do with a body.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Published: exactly these events, in this order.
    Valid(Published),
    /// Dropped whole, counted under this `Rejection::label()`.
    Invalid(&'static str),
}

/// What a valid hostile body must become on the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// Lowercase hyphenated, as published.
    pub submission_id: String,
    pub device_id: String,
    pub time_created: String,
    /// (type, type_specific_data) in document order.
    pub events: Vec<(&'static str, Value)>,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// The SQS message body exactly as sent.
    pub body: String,
    pub verdict: Verdict,
    /// Why this verdict, where the contract leaves room to ask.
    pub why: &'static str,
}

impl Case {
    pub fn label(&self) -> &'static str {
        match &self.verdict {
            Verdict::Valid(_) => "valid",
            Verdict::Invalid(label) => label,
        }
    }
}

/// One submission document, its top-level members as raw JSON text in order. Starts as a valid
/// submission with one event of each type.
#[derive(Debug, Clone)]
struct Doc {
    members: Vec<(String, String)>,
    submission_id: String,
}

impl Doc {
    fn new(n: usize) -> Doc {
        let submission_id = format!("0badc0de-0000-4000-8000-{n:012x}");
        Doc {
            members: vec![
                ("submission_id".into(), format!("\"{submission_id}\"")),
                ("device_id".into(), format!("\"{DEVICE_ID}\"")),
                ("time_created".into(), format!("\"{TIME_CREATED}\"")),
                ("events".into(), EVENTS.into()),
            ],
            submission_id,
        }
    }

    /// Replaces a member's raw value, or appends the member.
    fn set(mut self, key: &str, raw: &str) -> Doc {
        match self.members.iter_mut().find(|(k, _)| k == key) {
            Some(member) => member.1 = raw.to_owned(),
            None => self.members.push((key.to_owned(), raw.to_owned())),
        }
        self
    }

    /// Appends a member even when the key is already there.
    fn push(mut self, key: &str, raw: &str) -> Doc {
        self.members.push((key.to_owned(), raw.to_owned()));
        self
    }

    fn remove(mut self, key: &str) -> Doc {
        self.members.retain(|(k, _)| k != key);
        self
    }

    fn events(self, raw: &str) -> Doc {
        self.set("events", raw)
    }

    /// One network_connection item made of these raw values.
    fn connection(self, source_ip: &str, destination_ip: &str, port: &str) -> Doc {
        self.events(&format!(
            r#"{{"network_connection":[{{"source_ip":{source_ip},"destination_ip":{destination_ip},"destination_port":{port}}}]}}"#
        ))
    }

    /// One new_process item made of these raw values.
    fn process(self, cmdl: &str, user: &str) -> Doc {
        self.events(&format!(r#"{{"new_process":[{{"cmdl":{cmdl},"user":{user}}}]}}"#))
    }

    fn json(&self) -> String {
        let members: Vec<String> = self.members.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", members.join(","))
    }

    fn base64(&self) -> String {
        STANDARD.encode(self.json())
    }

    /// What the template's events become.
    fn published(&self, events: Vec<(&'static str, Value)>) -> Published {
        Published {
            submission_id: self.submission_id.clone(),
            device_id: DEVICE_ID.to_owned(),
            time_created: TIME_CREATED.to_owned(),
            events,
        }
    }
}

fn template_events() -> Vec<(&'static str, Value)> {
    vec![
        ("new_process", json!({"cmdl": "notepad.exe", "user": "john"})),
        (
            "network_connection",
            json!({"source_ip": "192.168.0.2", "destination_ip": "23.13.252.39", "destination_port": 43696}),
        ),
    ]
}

fn connection_event(source_ip: &str, destination_ip: &str, port: u16) -> (&'static str, Value) {
    (
        "network_connection",
        json!({"source_ip": source_ip, "destination_ip": destination_ip, "destination_port": port}),
    )
}

#[derive(Default)]
struct Catalogue {
    cases: Vec<Case>,
}

impl Catalogue {
    /// A fresh template document with an id of its own.
    fn doc(&self) -> Doc {
        Doc::new(self.cases.len() + 1)
    }

    fn invalid(&mut self, name: &str, body: String, label: &'static str, why: &'static str) {
        self.cases.push(Case {
            name: name.to_owned(),
            body,
            verdict: Verdict::Invalid(label),
            why,
        });
    }

    /// An invalid document, sent as base64 like sensors do.
    fn invalid_doc(&mut self, name: &str, doc: Doc, label: &'static str, why: &'static str) {
        self.invalid(name, doc.base64(), label, why);
    }

    fn valid(&mut self, name: &str, body: String, published: Published, why: &'static str) {
        self.cases.push(Case {
            name: name.to_owned(),
            body,
            verdict: Verdict::Valid(published),
            why,
        });
    }
}

/// Base64 of raw bytes: the only way to put non-UTF-8 into a body.
fn base64_bytes(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A template document with `bytes` spliced into the `cmdl` string.
fn with_cmdl_bytes(doc: Doc, bytes: &[u8]) -> String {
    let json = doc.process("\"CMDL\"", "\"u\"").json();
    let (before, after) = json.split_once("CMDL").unwrap_or((&json, ""));
    let mut raw = before.as_bytes().to_vec();
    raw.extend_from_slice(bytes);
    raw.extend_from_slice(after.as_bytes());
    base64_bytes(&raw)
}

/// The whole catalogue, small bodies first; bodies of [`MAX_BODY_BYTES`] come last.
pub fn catalogue() -> Vec<Case> {
    let mut c = Catalogue::default();
    encoding(&mut c);
    json_syntax(&mut c);
    duplicate_keys(&mut c);
    nulls_and_shapes(&mut c);
    uuids(&mut c);
    timestamps(&mut c);
    ipv4(&mut c);
    ports(&mut c);
    strings(&mut c);
    event_types(&mut c);
    large(&mut c);
    c.cases
}

fn encoding(c: &mut Catalogue) {
    c.invalid("not base64 at all", "!!! not base64 !!!".into(), "not_base64", "");
    let mut json = c.doc().json();
    while json.len().is_multiple_of(3) {
        json.push(' ');
    }
    c.invalid(
        "base64 without its padding",
        STANDARD_NO_PAD.encode(&json),
        "not_base64",
        "contract: standard alphabet, padded",
    );
    let wrapped: Vec<String> = c
        .doc()
        .base64()
        .as_bytes()
        .chunks(76)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    c.invalid(
        "MIME base64 with line breaks",
        wrapped.join("\r\n"),
        "not_base64",
        "only blanks around the body are trimmed, not inside it",
    );
    let body = c.doc().base64();
    c.invalid(
        "near miss: URL-safe base64 alphabet",
        body.replace('+', "-").replace('/', "_") + "-_",
        "not_base64",
        "contract: the standard alphabet",
    );
    let mut json = c.doc().json();
    while json.len() % 3 != 1 {
        json.push(' ');
    }
    // One byte left over: two symbols and `==`; the second carries 4 bits that must be zero.
    let body = STANDARD.encode(&json);
    let (head, tail) = body.split_at(body.len() - 3);
    // That symbol is one of A, Q, g, w; the next one in the alphabet sets its lowest bit.
    let bumped = char::from(tail.as_bytes()[0] + 1);
    c.invalid(
        "near miss: base64 with non-zero bits after the last byte",
        format!("{head}{bumped}=="),
        "not_base64",
        "RFC 4648 §3.5: a decoder may refuse them; the canonical encoding has none",
    );
    let body = c.doc().base64();
    let (head, tail) = body.split_at(40);
    c.invalid(
        "near miss: base64 with a blank inside",
        format!("{head} {tail}"),
        "not_base64",
        "only blanks around the body are trimmed",
    );
    let body = c.doc().base64();
    let (head, tail) = body.split_at(40);
    c.invalid(
        "near miss: base64 with padding in the middle",
        format!("{head}=={tail}"),
        "not_base64",
        "",
    );
    c.invalid(
        "raw JSON array body",
        "[1, 2, 3]".into(),
        "not_base64",
        "contract: only a body whose first non-blank byte is `{` is taken as JSON itself",
    );
    c.invalid(
        "blank body",
        "  \n\t ".into(),
        "not_json",
        "blank decodes to an empty document",
    );
    let d = c.doc();
    c.invalid("0xFF byte in a string", with_cmdl_bytes(d, b"a\xffb"), "not_utf8", "");
    let d = c.doc();
    c.invalid(
        "overlong UTF-8 for '/'",
        with_cmdl_bytes(d, b"\xc0\xaf"),
        "not_utf8",
        "overlong forms are not UTF-8",
    );
    let d = c.doc();
    c.invalid(
        "surrogate encoded as UTF-8 (CESU-8)",
        with_cmdl_bytes(d, b"\xed\xa0\x80"),
        "not_utf8",
        "UTF-8 excludes U+D800..U+DFFF",
    );
    let mut raw = c.doc().json().into_bytes();
    raw.extend_from_slice(b"\xe2\x82");
    c.invalid(
        "truncated multi-byte sequence at the end",
        base64_bytes(&raw),
        "not_utf8",
        "",
    );
    let mut raw = b"\xef\xbb\xbf".to_vec();
    raw.extend_from_slice(c.doc().json().as_bytes());
    c.invalid(
        "UTF-8 byte order mark before the document",
        base64_bytes(&raw),
        "not_json",
        "RFC 8259 §8.1 lets a parser treat a BOM as an error; sensors never send one",
    );
    let d = c.doc();
    let published = d.published(template_events());
    c.valid(
        "base64 with blanks around it",
        format!("\n  {}  \n", d.base64()),
        published,
        "blanks around the body are trimmed",
    );
    let d = c.doc();
    let published = d.published(template_events());
    c.valid(
        "raw JSON object body with leading blanks",
        format!("  \n{}", d.json()),
        published,
        "contract: a body that is itself a JSON object is accepted as-is",
    );
}

fn json_syntax(c: &mut Catalogue) {
    let d = c.doc();
    c.invalid(
        "trailing garbage after the document",
        STANDARD.encode(d.json() + " x"),
        "not_json",
        "",
    );
    let d = c.doc();
    c.invalid(
        "two documents in one body",
        STANDARD.encode(d.json() + &d.json()),
        "not_json",
        "",
    );
    let d = c.doc();
    c.invalid(
        "trailing comma",
        STANDARD.encode(d.json().trim_end_matches('}').to_owned() + ",}"),
        "not_json",
        "",
    );
    let d = c.doc().set("comment", "1 /* a comment */");
    c.invalid_doc("comment inside the document", d, "not_json", "");
    let d = c.doc().set("device_id", &format!("'{DEVICE_ID}'"));
    c.invalid_doc("single-quoted string", d, "not_json", "");
    let d = c.doc().set("extra", &("[".repeat(100_000) + &"]".repeat(100_000)));
    c.invalid_doc(
        "100 000 nested arrays in an ignored field",
        d,
        "not_json",
        "nesting beyond the parser's depth limit of 128 is refused, not recursed into",
    );
    let d = c.doc().set(
        "extra",
        &(r#"{"a":"#.repeat(60) + "[".repeat(60).as_str() + "]".repeat(60).as_str() + "}".repeat(60).as_str()),
    );
    let published = d.published(template_events());
    c.valid(
        "120 levels of nesting in an ignored field",
        d.base64(),
        published,
        "within the parser's depth limit, and unknown extra fields are ignored",
    );
    let d = c.doc().events(&format!(
        r#"{{"new_process":[{{"cmdl":"c","user":"u","x":{}0{}}}]}}"#,
        "[".repeat(200),
        "]".repeat(200)
    ));
    c.invalid_doc(
        "deep nesting inside an event item",
        d,
        "not_json",
        "beyond the depth limit",
    );
}

fn duplicate_keys(c: &mut Catalogue) {
    let why = "contract: a JSON object repeats a key (even with the same value)";
    let d = c.doc();
    let id = format!("\"{}\"", d.submission_id);
    c.invalid_doc(
        "submission_id twice",
        d.push("submission_id", &id),
        "duplicate_key",
        why,
    );
    let d = c.doc().push("events", "{}");
    c.invalid_doc("events twice", d, "duplicate_key", why);
    let d = c.doc().push("extra", "1").push("extra", "2");
    c.invalid_doc("an ignored top-level field twice", d, "duplicate_key", why);
    let d = c
        .doc()
        .events(r#"{"new_process":[{"cmdl":"a","user":"u"}],"new_process":[{"cmdl":"b","user":"u"}]}"#);
    c.invalid_doc("event type twice in events", d, "duplicate_key", why);
    let d = c
        .doc()
        .events(r#"{"new_process":[{"cmdl":"a","user":"u","cmdl":"a"}]}"#);
    c.invalid_doc("cmdl twice in an item", d, "duplicate_key", why);
    let d = c
        .doc()
        .events(r#"{"new_process":[{"cmdl":"a","user":"u","\u0063mdl":"b"}]}"#);
    c.invalid_doc(
        "cmdl twice, once spelled with an escape",
        d,
        "duplicate_key",
        "keys compare after unescaping: \\u0063mdl is cmdl",
    );
    let d = c.doc().set("extra", r#"[{"deep":{"k":1,"k":2}}]"#);
    c.invalid_doc("repeated key deep inside an ignored field", d, "duplicate_key", why);
}

fn nulls_and_shapes(c: &mut Catalogue) {
    c.invalid("document is null", STANDARD.encode("null"), "not_an_object", "");
    c.invalid("document is an array", STANDARD.encode("[{}]"), "not_an_object", "");
    c.invalid("document is a string", STANDARD.encode("\"{}\""), "not_an_object", "");
    c.invalid("document is a number", STANDARD.encode("42"), "not_an_object", "");
    for field in ["submission_id", "device_id", "time_created", "events"] {
        let d = c.doc().set(field, "null");
        c.invalid_doc(
            &format!("{field} is null"),
            d,
            "null_field",
            "contract: required field null",
        );
        let d = c.doc().remove(field);
        c.invalid_doc(&format!("{field} is missing"), d, "missing_field", "");
    }
    let d = c.doc().process("null", "\"u\"");
    c.invalid_doc("cmdl is null", d, "null_field", "");
    let d = c.doc().process("\"c\"", "null");
    c.invalid_doc("user is null", d, "null_field", "");
    let d = c.doc().connection("null", "\"1.2.3.4\"", "80");
    c.invalid_doc("source_ip is null", d, "null_field", "");
    let d = c.doc().connection("\"1.2.3.4\"", "\"1.2.3.4\"", "null");
    c.invalid_doc("destination_port is null", d, "null_field", "");
    let d = c.doc().events(r#"{"new_process":[{"user":"u"}]}"#);
    c.invalid_doc("cmdl is missing", d, "missing_field", "");
    let d = c
        .doc()
        .events(r#"{"network_connection":[{"source_ip":"1.2.3.4","destination_ip":"1.2.3.4"}]}"#);
    c.invalid_doc("destination_port is missing", d, "missing_field", "");
    let d = c.doc().events(r#"{"new_process":null}"#);
    c.invalid_doc(
        "an event type's value is null",
        d,
        "wrong_type",
        "a listed type must hold an array; only an absent type means no events",
    );
    let d = c.doc().events(r#"{"new_process":[null]}"#);
    c.invalid_doc("an item is null", d, "item_not_object", "");
    let d = c.doc().events(r#"{"new_process":[["notepad.exe","john"]]}"#);
    c.invalid_doc("an item is an array", d, "item_not_object", "");
    let d = c.doc().events(r#"{"network_connection":["1.2.3.4"]}"#);
    c.invalid_doc("an item is a string", d, "item_not_object", "");
    let d = c
        .doc()
        .events(r#"{"new_process":{"cmdl":"notepad.exe","user":"john"}}"#);
    c.invalid_doc("events of a type as an object, not an array", d, "wrong_type", "");
    let d = c.doc().events(r#"{"new_process":"notepad.exe"}"#);
    c.invalid_doc("events of a type as a string", d, "wrong_type", "");
    let d = c.doc().events(r#"{"new_process":1}"#);
    c.invalid_doc("events of a type as a number", d, "wrong_type", "");
    let d = c.doc().events(r#"[{"new_process":[]}]"#);
    c.invalid_doc("events is an array", d, "wrong_type", "");
    let d = c.doc().events("\"new_process\"");
    c.invalid_doc("events is a string", d, "wrong_type", "");
    let d = c
        .doc()
        .set("extra", "null")
        .events(r#"{"new_process":[{"cmdl":"notepad.exe","user":"john","pid":null}]}"#);
    let published = d.published(vec![("new_process", json!({"cmdl": "notepad.exe", "user": "john"}))]);
    c.valid(
        "nulls in ignored fields",
        d.base64(),
        published,
        "contract: unknown extra fields are ignored, whatever they hold",
    );
    let d = c.doc().events(r#"{"new_process":[],"network_connection":[]}"#);
    let published = d.published(vec![]);
    c.valid(
        "empty arrays: zero events",
        d.base64(),
        published,
        "deleted without publishing",
    );
}

fn uuids(c: &mut Catalogue) {
    let why = "contract: only the hyphenated 8-4-4-4-12 form";
    let bad = [
        ("braced", "{0badc0de-0000-4000-8000-000000000001}"),
        ("urn:uuid: prefix", "urn:uuid:0badc0de-0000-4000-8000-000000000001"),
        ("no hyphens", "0badc0de000040008000000000000001"),
        ("35 characters", "0badc0de-0000-4000-8000-00000000001"),
        ("37 characters", "0badc0de-0000-4000-8000-0000000000011"),
        ("a non-hex digit", "0badc0de-0000-4000-8000-00000000000g"),
        ("hyphens misplaced", "0badc0de0-000-4000-8000-000000000001"),
        ("a leading blank", " 0badc0de-0000-4000-8000-00000000001"),
        ("empty", ""),
        (
            "near miss: a blank for a hyphen",
            "0badc0de-0000-4000-8000 000000000001",
        ),
        (
            "near miss: a trailing newline",
            "0badc0de-0000-4000-8000-000000000001\\n",
        ),
        (
            "near miss: a plus sign for a digit",
            "+badc0de-0000-4000-8000-000000000001",
        ),
        ("near miss: a full-width digit", "0badc0de-0000-4000-8000-00000000000１"),
        (
            "near miss: a group one digit short",
            "0badc0de-000-40000-8000-000000000001",
        ),
    ];
    for (name, text) in bad {
        let d = c.doc().set("submission_id", &format!("\"{text}\""));
        c.invalid_doc(&format!("submission_id {name}"), d, "invalid_uuid", why);
    }
    let d = c.doc().set("device_id", "\"{31980191-fa99-4768-8a7b-0e81397ca6ef}\"");
    c.invalid_doc("device_id braced", d, "invalid_uuid", why);
    let d = c.doc().set("submission_id", "12345");
    c.invalid_doc("submission_id is a number", d, "wrong_type", "");
    let d = c.doc();
    let upper = d.submission_id.to_uppercase();
    let d = d
        .set("submission_id", &format!("\"{upper}\""))
        .set("device_id", &format!("\"{}\"", DEVICE_ID.to_uppercase()));
    let published = d.published(template_events());
    c.valid(
        "upper-case ids",
        d.base64(),
        published,
        "contract: either case; published lowercase (contract, output)",
    );
}

fn timestamps(c: &mut Catalogue) {
    let malformed = [
        ("30 February", "2021-02-30T10:00:00"),
        ("date only", "2021-03-28"),
        ("time only", "15:44:18"),
        ("hour 25", "2021-03-28T25:00:00"),
        ("a trailing newline", "2021-03-28T15:44:18.592840\\n"),
        ("empty", ""),
        ("ISO 8601 basic format", "20210328T154418"),
        ("an offset without a colon", "2021-03-28T15:44:18+0200"),
        ("words", "yesterday"),
        ("a lower-case t and no offset", "2021-03-28t15:44:18"),
    ];
    for (name, text) in malformed {
        let d = c.doc().set("time_created", &format!("\"{text}\""));
        c.invalid_doc(
            &format!("time_created {name}"),
            d,
            "invalid_timestamp",
            "contract: RFC 3339 date-time, offset optional",
        );
    }
    // Near misses: what a lenient parser (chrono's format strings skip blanks, take one digit
    // for two and read signed years of any length) would let through, and the edges of the
    // profile sensors write.
    let near_misses = [
        ("a one-digit month", "2021-3-28T15:44:18"),
        ("a one-digit day", "2021-03-8T15:44:18"),
        ("a one-digit hour", "2021-03-28T5:44:18"),
        ("a one-digit second", "2021-03-28T15:44:8"),
        ("a year with a plus sign", "+2021-03-28T15:44:18"),
        ("a five-digit year", "02021-03-28T15:44:18"),
        ("a blank after T", "2021-03-28T 15:44:18"),
        ("a blank before the minutes", "2021-03-28T15: 44:18"),
        ("a leading blank", " 2021-03-28T15:44:18"),
        ("a trailing blank", "2021-03-28T15:44:18 "),
        ("a space for T", "2021-03-28 15:44:18"),
        ("a lower-case z", "2021-03-28T15:44:18z"),
        ("a lower-case t and z", "2021-03-28t15:44:18z"),
        ("leap second 60", "2021-03-28T15:44:60"),
        ("29 February of a common year", "2021-02-29T15:44:18"),
        ("31 April", "2021-04-31T15:44:18"),
        ("a dot without fraction digits", "2021-03-28T15:44:18."),
        ("ten fraction digits", "2021-03-28T15:44:18.1234567890"),
        ("an offset hour of 24", "2021-03-28T15:44:18+24:00"),
        ("an offset minute of 60", "2021-03-28T15:44:18+02:60"),
        ("a one-digit offset hour", "2021-03-28T15:44:18+2:00"),
        ("Z after an offset", "2021-03-28T15:44:18+02:00Z"),
        ("a full-width digit", "2021-03-28T15:44:1８"),
    ];
    for (name, text) in near_misses {
        let d = c.doc().set("time_created", &format!("\"{text}\""));
        c.invalid_doc(
            &format!("time_created near miss: {name}"),
            d,
            "invalid_timestamp",
            "README: exactly YYYY-MM-DDTHH:MM:SS[.F{1,9}][Z|±HH:MM], upper-case T and Z, seconds 00-59, a real date",
        );
    }
    let d = c.doc().set("time_created", "1616946258");
    c.invalid_doc("time_created as epoch seconds", d, "wrong_type", "must be a string");
    for (name, text) in [
        ("in 1999", "1999-12-31T23:59:59.999999"),
        ("in year 1", "0001-01-01T00:00:00"),
    ] {
        let d = c.doc().set("time_created", &format!("\"{text}\""));
        c.invalid_doc(
            &format!("time_created {name}"),
            d,
            "timestamp_too_old",
            "contract: not before 2000-01-01",
        );
    }
    for (name, text) in [
        ("in 9999", "9999-12-31T23:59:59"),
        ("in 2999 at +14:00", "2999-01-01T00:00:00+14:00"),
    ] {
        let d = c.doc().set("time_created", &format!("\"{text}\""));
        c.invalid_doc(
            &format!("time_created {name}"),
            d,
            "timestamp_in_future",
            "contract: at most 26 h ahead of backend UTC",
        );
    }
    for (name, text) in [
        ("with Z", "2021-03-28T15:44:18.592840Z"),
        ("with +14:00", "2021-03-28T15:44:18+14:00"),
        ("on 29 February of a leap year", "2020-02-29T15:44:18.123456789-00:00"),
    ] {
        let d = c.doc().set("time_created", &format!("\"{text}\""));
        let mut published = d.published(template_events());
        published.time_created = text.to_owned();
        c.valid(
            &format!("time_created {name}"),
            d.base64(),
            published,
            "contract: an offset is allowed; passed through unchanged",
        );
    }
}

fn ipv4(c: &mut Catalogue) {
    let why = "contract: four decimal octets 0-255, no leading zeros, no spaces";
    let bad = [
        ("a leading zero", "192.168.01.2"),
        ("a leading zero in the first octet", "010.0.0.1"),
        ("a leading space", " 192.168.0.2"),
        ("a trailing space", "192.168.0.2 "),
        ("octet 256", "192.168.0.256"),
        ("three octets", "192.168.0"),
        ("five octets", "1.2.3.4.5"),
        ("a trailing dot", "1.2.3.4."),
        ("an empty octet", "1..2.3"),
        ("IPv6 loopback", "::1"),
        ("IPv4-mapped IPv6", "::ffff:192.168.0.2"),
        ("hex octet", "0x7f.0.0.1"),
        ("a plus sign", "+1.2.3.4"),
        ("a full-width digit", "１.2.3.4"),
        ("a single integer", "3232235522"),
        ("empty", ""),
        ("near miss: a trailing newline", "192.168.0.2\\n"),
        ("near miss: a tab inside", "192.168.\\t0.2"),
        ("near miss: octet 300", "192.168.0.300"),
        ("near miss: a minus sign", "192.168.0.-2"),
        ("near miss: a four-digit octet", "192.1680.0.2"),
        ("near miss: a comma for a dot", "192.168,0.2"),
    ];
    for (name, text) in bad {
        let d = c.doc().connection(&format!("\"{text}\""), "\"23.13.252.39\"", "443");
        c.invalid_doc(&format!("source_ip {name}"), d, "invalid_ipv4", why);
    }
    let d = c.doc().connection("\"192.168.0.2\"", "\"2001:db8::1\"", "443");
    c.invalid_doc("destination_ip IPv6", d, "invalid_ipv4", why);
    let d = c.doc().connection("3232235522", "\"23.13.252.39\"", "443");
    c.invalid_doc("source_ip as a number", d, "wrong_type", "must be a string");
    let d = c.doc().events(
        r#"{"network_connection":[{"source_ip":"0.0.0.0","destination_ip":"255.255.255.255","destination_port":0},{"source_ip":"0.10.100.255","destination_ip":"1.2.3.4","destination_port":65535}]}"#,
    );
    let published = d.published(vec![
        connection_event("0.0.0.0", "255.255.255.255", 0),
        connection_event("0.10.100.255", "1.2.3.4", 65535),
    ]);
    c.valid(
        "extreme addresses and ports",
        d.base64(),
        published,
        "0 and 255 octets, ports 0 and 65535 are in range",
    );
}

fn ports(c: &mut Catalogue) {
    let cases: [(&str, &str, &'static str, &'static str); 19] = [
        ("NaN", "NaN", "not_json", "NaN is not JSON"),
        ("Infinity", "Infinity", "not_json", "Infinity is not JSON"),
        ("-Infinity", "-Infinity", "not_json", "-Infinity is not JSON"),
        (
            "1e400",
            "1e400",
            "not_json",
            "beyond f64 the parser refuses the number (RFC 8259 §6 lets it limit the range), whatever field holds it",
        ),
        (
            "-0",
            "-0",
            "port_negative",
            "written with a minus sign: the contract rejects negative ports, a sensor writing -0 is broken, and -0 parses as the float -0.0, so it cannot be told from -0.0",
        ),
        (
            "443.0",
            "443.0",
            "port_not_integer",
            "a fraction part, even .0, is not a JSON integer (RFC 8259 §6 int has no frac); contract: fractional is invalid",
        ),
        (
            "4.43e2",
            "4.43e2",
            "port_not_integer",
            "an exponent is not a JSON integer",
        ),
        ("443.5", "443.5", "port_not_integer", "contract: fractional"),
        ("-1", "-1", "port_negative", "contract: negative"),
        ("-0.5", "-0.5", "port_negative", "negative before fractional"),
        ("65536", "65536", "port_out_of_range", "contract: 0..=65535"),
        (
            "2^64",
            "18446744073709551616",
            "port_out_of_range",
            "above u64, still a number",
        ),
        ("\"443\"", "\"443\"", "wrong_type", "contract: a string is invalid"),
        ("true", "true", "wrong_type", ""),
        ("[443]", "[443]", "wrong_type", ""),
        ("near miss: +443", "+443", "not_json", "JSON numbers have no plus sign"),
        (
            "near miss: 0443",
            "0443",
            "not_json",
            "JSON numbers have no leading zero",
        ),
        (
            "near miss: 4 43",
            "4 43",
            "not_json",
            "a blank splits it into two tokens",
        ),
        (
            "near miss: 65535.",
            "65535.",
            "not_json",
            "a dot needs a digit after it",
        ),
    ];
    for (name, raw, label, why) in cases {
        let d = c.doc().connection("\"192.168.0.2\"", "\"23.13.252.39\"", raw);
        c.invalid_doc(&format!("destination_port {name}"), d, label, why);
    }
}

fn strings(c: &mut Catalogue) {
    let cmdl_raw = r#""a\"b\\c\/d\b\f\n\r\t\u0000\u0001\u001f\u007f\u2028\u2029</script>'""#;
    let cmdl = "a\"b\\c/d\u{8}\u{c}\n\r\t\u{0}\u{1}\u{1f}\u{7f}\u{2028}\u{2029}</script>'";
    let d = c.doc().process(cmdl_raw, r#""J\u00fcrgen 山田""#);
    let published = d.published(vec![("new_process", json!({"cmdl": cmdl, "user": "Jürgen 山田"}))]);
    c.valid(
        "control characters and quotes in cmdl",
        d.base64(),
        published,
        "any JSON string is a valid cmdl; the record must escape it back to valid JSON",
    );
    let d = c.doc().process(r#""\ud83d\ude00 ok""#, r#""""#);
    let published = d.published(vec![("new_process", json!({"cmdl": "😀 ok", "user": ""}))]);
    c.valid(
        "surrogate pair and empty user",
        d.base64(),
        published,
        "a pair of surrogate escapes is one character",
    );
    let why = "a lone surrogate escape is no Unicode character and cannot become UTF-8";
    let d = c.doc().process(r#""\ud800""#, "\"u\"");
    c.invalid_doc("lone high surrogate in cmdl", d, "not_json", why);
    let d = c.doc().process("\"c\"", r#""x\udc00""#);
    c.invalid_doc("lone low surrogate in user", d, "not_json", why);
    let d = c.doc().process(r#""\ud800\u0041""#, "\"u\"");
    c.invalid_doc("high surrogate followed by a letter", d, "not_json", why);
    let d = c.doc().set("\\ud800", "1");
    c.invalid_doc("lone surrogate in an ignored key", d, "not_json", why);
    let d = c.doc().process("\"a\tb\"", "\"u\"");
    c.invalid_doc(
        "raw tab inside a string",
        d,
        "not_json",
        "RFC 8259 §7: control characters must be escaped",
    );
    let d = c.doc().process("42", "\"u\"");
    c.invalid_doc("cmdl is a number", d, "wrong_type", "");
    let d = c.doc().process("[\"notepad.exe\"]", "\"u\"");
    c.invalid_doc("cmdl is an array", d, "wrong_type", "");
    let d = c.doc().process("\"c\"", "{}");
    c.invalid_doc("user is an object", d, "wrong_type", "");
}

fn event_types(c: &mut Catalogue) {
    let why = "contract: `events` holds a key that is not a known event type";
    let long = "x".repeat(10_000);
    let unknown = [
        ("file_write", "file_write"),
        ("New_Process", "New_Process"),
        ("trailing space", "new_process "),
        ("empty key", ""),
        ("10 000-character key", long.as_str()),
        ("__proto__", "__proto__"),
    ];
    for (name, key) in unknown {
        let d = c.doc().events(&format!(r#"{{"new_process":[],"{key}":[]}}"#));
        c.invalid_doc(&format!("unknown event type {name}"), d, "unknown_event_type", why);
    }
}

/// The document's JSON up to the opening of its `new_process` array.
fn open_process_array(d: &Doc) -> String {
    let json = d.clone().events(r#"{"new_process":["#).json();
    json.strip_suffix('}').unwrap_or(&json).to_owned()
}

fn large(c: &mut Catalogue) {
    // Many events: the largest base64 body of the smallest items.
    let d = c.doc();
    let head = open_process_array(&d);
    let item = r#"{"cmdl":"c","user":"u"},"#;
    let tail = r#"{"cmdl":"c","user":"u"}]}}"#;
    let count = (MAX_BASE64_PAYLOAD - head.len() - tail.len()) / item.len();
    let mut json = head.clone() + &item.repeat(count) + tail;
    while json.len() < MAX_BASE64_PAYLOAD {
        json.insert(json.len() - 1, ' ');
    }
    let published = d.published(vec![("new_process", json!({"cmdl": "c", "user": "u"})); count + 1]);
    c.valid(
        "1 MiB body of the smallest events",
        STANDARD.encode(&json),
        published,
        "the largest SQS body; every event is published",
    );
    // The same, the last item not an object.
    let d = c.doc();
    let head = open_process_array(&d);
    let tail = "7]}}";
    let count = (MAX_BASE64_PAYLOAD - head.len() - tail.len()) / item.len();
    let json = head + &item.repeat(count) + tail;
    c.invalid(
        "1 MiB body of events, the last one a number",
        STANDARD.encode(&json),
        "item_not_object",
        "one broken item rejects the whole submission",
    );
    // A huge array in an ignored field.
    let d = c.doc();
    let json = d.json();
    let filler = MAX_BASE64_PAYLOAD - json.len() - r#","extra":[]"#.len();
    let zeros = "0,".repeat(filler / 2);
    let d = d.set("extra", &format!("[{}]", zeros.trim_end_matches(',')));
    let published = d.published(template_events());
    c.valid(
        "1 MiB body, almost all of it an ignored array",
        d.base64(),
        published,
        "contract: unknown extra fields are ignored, however large",
    );
    c.invalid(
        "1 MiB body of nothing but '['",
        STANDARD.encode("[".repeat(MAX_BASE64_PAYLOAD)),
        "not_json",
        "refused at the parser's depth limit",
    );
    // A raw JSON body of exactly 1 MiB with one command line filling it: the record (the
    // command line plus the event's other fields and the partition key) exceeds 1 MiB.
    let d = c.doc().process("\"CMDL\"", "\"u\"");
    let json = d.json();
    let cmdl = "x".repeat(MAX_BODY_BYTES - (json.len() - "CMDL".len()));
    c.invalid(
        "1 MiB raw body, one command line filling it",
        json.replace("CMDL", &cmdl),
        "record_too_large",
        "its record would exceed Kinesis' 1 MiB record limit: it can never be published, so it is dropped whole",
    );
}

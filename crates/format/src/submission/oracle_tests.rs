//! The decoder against an independent oracle (`telemetry_testkit::oracle`) on near misses of
//! valid field values: every single-character insertion, deletion and substitution of a few
//! valid seeds, enumerated exhaustively, and random multi-character edits. Each is plugged into
//! an otherwise valid submission; the decoder must accept exactly what the oracle accepts and
//! reject the rest with the field's own reason.

use std::collections::BTreeSet;

use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use serde_json::Value;

use super::*;

use telemetry_testkit::oracle;

const SUB: &str = "8be01974-0f15-4d4f-809f-257a6de4d3f9";
const DEV: &str = "31980191-fa99-4768-8a7b-0e81397ca6ef";
const TIME: &str = "2021-03-28T15:44:18.592840";

/// What an edit may put in: blanks (ASCII and not), digits (ASCII and not), signs, the
/// separators of every rule, the letters they use or resemble.
const ALPHABET: &[char] = &[
    ' ', '\t', '\n', '\r', '\u{c}', '\u{a0}', '\u{3000}', '0', '1', '2', '3', '5', '6', '9', '１', '٣', '+', '-', ':',
    '.', ',', '/', '=', '_', 'T', 't', 'Z', 'z', 'a', 'f', 'A', 'F', 'g', 'G', 'e', 'E', 'x', 'Q', 'w',
];

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2021-03-29T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Wide enough for every year the grammar can write, so that only the grammar decides.
fn any_year() -> TimeBounds {
    TimeBounds {
        not_before: NaiveDate::from_ymd_opt(0, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .unwrap(),
        max_ahead: TimeDelta::days(366 * 10_000),
    }
}

fn verdict(body: &str) -> &'static str {
    match decode(body, &any_year(), now()) {
        Ok(_) => "accepted",
        Err(r) => r.label(),
    }
}

/// A valid document with one connection; each argument is raw JSON.
fn document(submission_id: &str, device_id: &str, time_created: &str, source_ip: &str, port: &str) -> String {
    format!(
        r#"{{"submission_id":{submission_id},"device_id":{device_id},"time_created":{time_created},"events":{{"new_process":[{{"cmdl":"c","user":"u"}}],"network_connection":[{{"source_ip":{source_ip},"destination_ip":"23.13.252.39","destination_port":{port}}}]}}}}"#
    )
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// A valid base64 body whose document has this field (string) replaced.
fn body_with(field: Field, text: &str) -> String {
    let q = quoted(text);
    let (sub, dev, time, ip) = (quoted(SUB), quoted(DEV), quoted(TIME), quoted("192.168.0.2"));
    let json = match field {
        Field::SubmissionId => document(&q, &dev, &time, &ip, "443"),
        Field::DeviceId => document(&sub, &q, &time, &ip, "443"),
        Field::TimeCreated => document(&sub, &dev, &q, &ip, "443"),
        Field::SourceIp => document(&sub, &dev, &time, &q, "443"),
        Field::Port => document(&sub, &dev, &time, &ip, text),
    };
    STANDARD.encode(json)
}

#[derive(Debug, Clone, Copy)]
enum Field {
    SubmissionId,
    DeviceId,
    TimeCreated,
    SourceIp,
    /// Raw JSON text, not a string.
    Port,
}

/// The oracle's verdict on a document holding `text` in `field`.
fn expected(field: Field, text: &str) -> &'static str {
    let rule = |ok: bool, reason| if ok { "accepted" } else { reason };
    match field {
        Field::SubmissionId | Field::DeviceId => rule(oracle::uuid(text), "invalid_uuid"),
        Field::TimeCreated => rule(oracle::time_created(text), "invalid_timestamp"),
        Field::SourceIp => rule(oracle::ipv4(text), "invalid_ipv4"),
        Field::Port => expected_port(text),
    }
}

/// A port's raw JSON text: not JSON, not a number, or which part of "integer 0..=65535" fails.
fn expected_port(raw: &str) -> &'static str {
    let Ok(value) = serde_json::from_str::<Value>(raw) else {
        return "not_json";
    };
    match &value {
        Value::Null => "null_field",
        Value::Number(_) if oracle::port(&value) => "accepted",
        Value::Number(n) => {
            if raw.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('-') {
                "port_negative"
            } else if n.as_f64().is_some_and(|v| v > 65535.0) {
                "port_out_of_range"
            } else {
                "port_not_integer"
            }
        }
        _ => "wrong_type",
    }
}

/// Every text one insertion, deletion or substitution away from `seed`.
fn single_edits(seed: &str) -> BTreeSet<String> {
    let chars: Vec<char> = seed.chars().collect();
    let mut out = BTreeSet::new();
    for i in 0..=chars.len() {
        for &c in ALPHABET {
            let mut v = chars.clone();
            v.insert(i, c);
            out.insert(v.into_iter().collect());
        }
        if i < chars.len() {
            let mut v = chars.clone();
            v.remove(i);
            out.insert(v.into_iter().collect());
            for &c in ALPHABET {
                let mut v = chars.clone();
                v[i] = c;
                out.insert(v.into_iter().collect());
            }
        }
    }
    out.remove(seed);
    out
}

/// Checks the decoder against the oracle on every text; returns how many the oracle accepted.
fn agree_on(field: Field, texts: impl IntoIterator<Item = String>) -> usize {
    let mut disagreements = Vec::new();
    let mut accepted = 0;
    for text in texts {
        let body = body_with(field, &text);
        let (want, got) = (expected(field, &text), verdict(&body));
        if want != got {
            disagreements.push(format!("{text:?}: oracle {want}, decoder {got}"));
        }
        if got == "accepted" {
            accepted += 1;
            if let Err(e) = oracle::accepted_body_obeys_the_rules(&body) {
                disagreements.push(format!("{text:?}: accepted, but {e}"));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{field:?}: {} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    accepted
}

/// Every single edit of every seed; `min_accepted` shows that near misses can still be valid,
/// so a decoder rejecting everything would fail too.
fn exhaustive(field: Field, seeds: &[&str], min_accepted: usize) {
    for seed in seeds {
        assert_eq!(expected(field, seed), "accepted", "seed {seed:?}");
    }
    let texts: BTreeSet<String> = seeds.iter().flat_map(|s| single_edits(s)).collect();
    let accepted = agree_on(field, texts);
    assert!(accepted >= min_accepted, "{field:?}: only {accepted} near misses valid");
}

#[test]
fn uuid_near_misses() {
    let seeds = [
        SUB,
        "31980191-FA99-4768-8A7B-0E81397CA6EF",
        "00000000-0000-0000-0000-000000000000",
    ];
    exhaustive(Field::SubmissionId, &seeds, 100);
    exhaustive(Field::DeviceId, &seeds[..1], 30);
}

#[test]
fn ipv4_near_misses() {
    exhaustive(
        Field::SourceIp,
        &["0.0.0.0", "255.255.255.255", "192.168.0.2", "10.200.1.99", "1.2.3.4"],
        50,
    );
}

#[test]
fn timestamp_near_misses() {
    exhaustive(
        Field::TimeCreated,
        &[
            TIME,
            "2020-02-29T23:59:59",
            "2021-03-28T15:44:18Z",
            "2021-03-28T15:44:18.5+14:00",
            "2019-12-31T00:00:00.123456789-05:30",
            "2000-01-01T09:09:09",
        ],
        50,
    );
}

#[test]
fn port_near_misses() {
    exhaustive(Field::Port, &["0", "443", "65535", "9", "10000"], 20);
}

#[test]
fn base64_near_misses() {
    // Documents of each length mod 3, so bodies end in no, one and two `=`.
    let mut seeds = Vec::new();
    for pad in ["", " ", "  "] {
        let json =
            format!(r#"{{"submission_id":"{SUB}","device_id":"{DEV}","time_created":"{TIME}","events":{{}}}}{pad}"#);
        seeds.push(STANDARD.encode(json));
    }
    assert_eq!(
        seeds.iter().map(|s| s.matches('=').count()).collect::<BTreeSet<_>>(),
        BTreeSet::from([0, 1, 2])
    );
    let mut disagreements = Vec::new();
    let mut still_base64 = 0;
    for body in seeds.iter().flat_map(|s| single_edits(s)) {
        let got = verdict(&body);
        let trimmed = oracle::trim_body(&body);
        // A body that now starts with `{` is read as JSON, not base64.
        if trimmed.starts_with('{') {
            continue;
        }
        let oracle_ok = oracle::base64(trimmed);
        still_base64 += usize::from(oracle_ok);
        if oracle_ok == (got == "not_base64") {
            disagreements.push(format!("{body:?}: oracle base64 {oracle_ok}, decoder {got}"));
        }
        if got == "accepted"
            && let Err(e) = oracle::accepted_body_obeys_the_rules(&body)
        {
            disagreements.push(format!("{body:?}: accepted, but {e}"));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    assert!(still_base64 > 1000, "{still_base64}");
}

#[test]
fn the_oracle_knows_the_calendar() {
    for ok in [
        "2020-02-29T00:00:00",
        "2000-02-29T00:00:00",
        "2021-12-31T23:59:59.999999999",
    ] {
        assert!(oracle::time_created(ok), "{ok}");
    }
    for bad in [
        "2021-02-29T00:00:00",
        "1900-02-29T00:00:00",
        "2021-04-31T00:00:00",
        "2021-03-28T15:44:60",
        "2021-03-28T15:44:18.1234567890",
        "2021-03-28T15:44:18+24:00",
        "2021-03-28T15:44:18z",
        "2021-03-28t15:44:18",
    ] {
        assert!(!oracle::time_created(bad), "{bad}");
        assert_eq!(
            verdict(&body_with(Field::TimeCreated, bad)),
            "invalid_timestamp",
            "{bad}"
        );
    }
}

/// The fuzz target's check can fail: each rule broken in an otherwise valid body is named.
#[test]
fn the_oracle_names_the_rule_an_accepted_body_would_break() {
    let valid = document(&quoted(SUB), &quoted(DEV), &quoted(TIME), &quoted("1.2.3.4"), "443");
    assert_eq!(oracle::accepted_body_obeys_the_rules(&STANDARD.encode(&valid)), Ok(()));
    assert_eq!(oracle::accepted_body_obeys_the_rules(&format!(" {valid}\n")), Ok(()));
    let broken = [
        (valid.replace(TIME, "2021-3-28T15:44:18"), "`time_created`"),
        (valid.replace(DEV, "device"), "`device_id`"),
        (valid.replace("1.2.3.4", "1.2.3.04"), "`source_ip`"),
        (valid.replace("443", "443.0"), "`destination_port`"),
        (valid.replace("new_process", "process_exit"), "unknown event type"),
    ];
    for (json, rule) in broken {
        let err = oracle::accepted_body_obeys_the_rules(&json).unwrap_err();
        assert!(err.contains(rule), "{err}");
    }
    let unpadded = STANDARD.encode(&valid).trim_end_matches('=').to_owned();
    assert_ne!(unpadded, STANDARD.encode(&valid), "the seed needs padding");
    let err = oracle::accepted_body_obeys_the_rules(&unpadded).unwrap_err();
    assert!(err.contains("base64"), "{err}");
}

/// Texts near the timestamp grammar: every field's digit count and range, the separators and
/// the offset drawn from slightly more than the grammar allows.
const NEAR_TIMESTAMP: &str = "[+-]?[0-9]{3,5}-[0-9]{1,3}-[0-3]?[0-9]{1,2}[Tt ][0-2]?[0-9]{1,2}:[0-6][0-9]{0,2}:[0-6]?[0-9]{1,2}(\\.[0-9]{0,10})?([Zz]|[+-][0-9]{1,2}:?[0-9]{2})?";

fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, prop::sample::Index, u8)>> {
    prop::collection::vec(
        (any::<prop::sample::Index>(), any::<prop::sample::Index>(), 0u8..3),
        1..5,
    )
}

/// Applies random insertions, deletions and substitutions from [`ALPHABET`].
fn apply(seed: &str, edits: &[(prop::sample::Index, prop::sample::Index, u8)]) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for (at, pick, op) in edits {
        let c = ALPHABET[pick.index(ALPHABET.len())];
        match op {
            0 => chars.insert(at.index(chars.len() + 1), c),
            1 if !chars.is_empty() => {
                chars.remove(at.index(chars.len()));
            }
            _ if !chars.is_empty() => {
                let i = at.index(chars.len());
                chars[i] = c;
            }
            _ => chars.push(c),
        }
    }
    chars.into_iter().collect()
}

fn agree(field: Field, text: &str) -> Result<(), TestCaseError> {
    let body = body_with(field, text);
    prop_assert_eq!(verdict(&body), expected(field, text), "{:?}", text);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn timestamps_near_the_grammar(text in NEAR_TIMESTAMP) {
        agree(Field::TimeCreated, &text)?;
    }

    #[test]
    fn timestamps_with_several_edits(seed in prop::sample::select(vec![TIME, "2020-02-29T23:59:59Z", "2021-03-28T15:44:18.5-05:30"]), e in edits()) {
        agree(Field::TimeCreated, &apply(seed, &e))?;
    }

    #[test]
    fn uuids_with_several_edits(e in edits()) {
        agree(Field::DeviceId, &apply(DEV, &e))?;
    }

    #[test]
    fn ipv4_with_several_edits(seed in prop::sample::select(vec!["192.168.0.2", "1.2.3.4", "255.255.255.255"]), e in edits()) {
        agree(Field::SourceIp, &apply(seed, &e))?;
    }

    #[test]
    fn ports_with_several_edits(seed in prop::sample::select(vec!["443", "65535", "0"]), e in edits()) {
        agree(Field::Port, &apply(seed, &e))?;
    }

    #[test]
    fn any_dotted_text_of_digits(text in "[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}") {
        agree(Field::SourceIp, &text)?;
    }
}

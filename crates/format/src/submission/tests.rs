use super::*;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;

pub(super) const SUB: &str = "8be01974-0f15-4d4f-809f-257a6de4d3f9";
pub(super) const DEV: &str = "31980191-fa99-4768-8a7b-0e81397ca6ef";

pub(super) fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2021-03-29T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn check(json: &str) -> Result<Submission, Rejection> {
    decode(&STANDARD.encode(json), &TimeBounds::default(), now())
}

/// The specification's example, with `events` replaced.
fn doc_with_events(events: &str) -> String {
    format!(
        r#"{{"submission_id":"{SUB}","device_id":"{DEV}","time_created":"2021-03-28T15:44:18.592840","events":{events}}}"#
    )
}

fn example() -> String {
    doc_with_events(
        r#"{"new_process":[{"cmdl":"notepad.exe","user":"john"},{"cmdl":"whoami","user":"admin"}],
            "network_connection":[{"source_ip":"192.168.0.2","destination_ip":"23.13.252.39","destination_port":43696}]}"#,
    )
}

fn with_field(name: &str, raw_value: &str) -> String {
    let mut fields = vec![
        ("submission_id", format!("\"{SUB}\"")),
        ("device_id", format!("\"{DEV}\"")),
        ("time_created", "\"2021-03-28T15:44:18.592840\"".to_owned()),
        ("events", "{}".to_owned()),
    ];
    for f in &mut fields {
        if f.0 == name {
            f.1 = raw_value.to_owned();
        }
    }
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

fn without_field(name: &str) -> String {
    let doc: serde_json::Value = serde_json::from_str(&with_field(name, "0")).unwrap();
    let mut map = doc.as_object().unwrap().clone();
    map.remove(name);
    serde_json::Value::Object(map).to_string()
}

fn connection(src: &str, dst: &str, port: &str) -> String {
    doc_with_events(&format!(
        r#"{{"network_connection":[{{"source_ip":{src},"destination_ip":{dst},"destination_port":{port}}}]}}"#
    ))
}

fn reason(json: &str) -> &'static str {
    match check(json) {
        Ok(_) => "accepted",
        Err(r) => r.label(),
    }
}

#[test]
fn accepts_the_spec_example_in_document_order() {
    let sub = check(&example()).unwrap();
    assert_eq!(sub.submission_id.to_string(), SUB);
    assert_eq!(sub.device_id.to_string(), DEV);
    assert_eq!(sub.time_created, "2021-03-28T15:44:18.592840");
    assert_eq!(
        sub.events,
        vec![
            EventData::NewProcess {
                cmdl: "notepad.exe".into(),
                user: "john".into()
            },
            EventData::NewProcess {
                cmdl: "whoami".into(),
                user: "admin".into()
            },
            EventData::NetworkConnection {
                source_ip: Ipv4Addr::new(192, 168, 0, 2),
                destination_ip: Ipv4Addr::new(23, 13, 252, 39),
                destination_port: 43696
            },
        ]
    );
}

#[test]
fn keeps_document_order_when_network_connection_comes_first() {
    let sub = check(&doc_with_events(
        r#"{"network_connection":[{"source_ip":"1.2.3.4","destination_ip":"5.6.7.8","destination_port":1}],
            "new_process":[{"cmdl":"a","user":"b"}]}"#,
    ))
    .unwrap();
    assert_eq!(sub.events[0].type_name(), "network_connection");
    assert_eq!(sub.events[1].type_name(), "new_process");
}

#[test]
fn accepts_a_raw_json_body_as_is() {
    let body = format!("  \n{}", example());
    let sub = decode(&body, &TimeBounds::default(), now()).unwrap();
    assert_eq!(sub.events.len(), 3);
}

#[test]
fn accepts_uppercase_ids_and_reports_them_lowercase() {
    let json = with_field("device_id", &format!("\"{}\"", DEV.to_uppercase()));
    assert_eq!(check(&json).unwrap().device_id.to_string(), DEV);
}

#[test]
fn accepts_empty_and_missing_event_types_and_zero_events() {
    assert!(check(&doc_with_events("{}")).unwrap().events.is_empty());
    assert!(
        check(&doc_with_events(r#"{"new_process":[]}"#))
            .unwrap()
            .events
            .is_empty()
    );
}

#[test]
fn ignores_unknown_extra_fields_at_top_level_and_in_items() {
    let json = format!(
        r#"{{"extra":{{"a":[1,2]}},"submission_id":"{SUB}","device_id":"{DEV}","time_created":"2021-03-28T15:44:18",
            "events":{{"new_process":[{{"cmdl":"x","user":"y","pid":42}}]}}}}"#
    );
    let sub = check(&json).unwrap();
    assert_eq!(
        sub.events,
        vec![EventData::NewProcess {
            cmdl: "x".into(),
            user: "y".into()
        }]
    );
}

#[test]
fn accepts_timestamps_with_and_without_offset_and_keeps_them_unchanged() {
    for ts in [
        "2021-03-29T12:06:09.576033",
        "2021-03-29T12:06:09",
        "2021-03-29T12:06:09.576033+02:00",
        "2021-03-29T12:06:09Z",
        "2021-03-29T12:06:09.5-05:30",
        "2020-02-29T12:06:09",
        "2021-03-29T12:06:09.123456789-00:00",
        "2021-03-29T12:06:09+23:59",
    ] {
        let sub = check(&with_field("time_created", &format!("\"{ts}\""))).unwrap_or_else(|r| panic!("{ts}: {r}"));
        assert_eq!(sub.time_created, ts);
    }
}

#[test]
fn timestamp_plausibility_bounds() {
    let at = |ts: &str| reason(&with_field("time_created", &format!("\"{ts}\"")));
    assert_eq!(at("2000-01-01T00:00:00"), "accepted");
    assert_eq!(at("1999-12-31T23:59:59.999"), "timestamp_too_old");
    // now() is 2021-03-29T12:00:00Z: 26 h ahead is the limit.
    assert_eq!(at("2021-03-30T14:00:00"), "accepted");
    assert_eq!(at("2021-03-30T14:00:01"), "timestamp_in_future");
    assert_eq!(at("2021-03-30T14:00:01+02:00"), "accepted");
    assert_eq!(at("2021-03-30T14:00:01Z"), "timestamp_in_future");
}

#[test]
fn timestamp_bounds_are_configurable() {
    let bounds = TimeBounds {
        not_before: NaiveDate::from_ymd_opt(2021, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap(),
        max_ahead: TimeDelta::hours(1),
    };
    let run =
        |ts: &str| decode(&with_field("time_created", &format!("\"{ts}\"")), &bounds, now()).map_err(|r| r.label());
    assert_eq!(run("2020-12-31T23:00:00").unwrap_err(), "timestamp_too_old");
    assert_eq!(run("2021-03-29T13:00:01").unwrap_err(), "timestamp_in_future");
    assert!(run("2021-03-29T13:00:00").is_ok());
}

#[test]
fn rejects_bodies_that_are_not_base64_utf8_or_json() {
    let run = |body: &str| decode(body, &TimeBounds::default(), now()).unwrap_err().label();
    assert_eq!(run("not base64!"), "not_base64");
    assert_eq!(run("eyJh"), "not_json"); // `{"a` cut short
    assert_eq!(run(&STANDARD.encode([0x7b, 0xff, 0xfe, 0x7d])), "not_utf8");
    assert_eq!(run(&STANDARD.encode("{\"a\": }")), "not_json");
    assert_eq!(run("{\"a\":"), "not_json");
    assert_eq!(run(""), "not_json");
    // Unpadded base64 is not the standard padded alphabet.
    let mut json = example();
    while !STANDARD.encode(&json).ends_with('=') {
        json.push(' ');
    }
    assert_eq!(run(STANDARD.encode(&json).trim_end_matches('=')), "not_base64");
}

#[test]
fn rejects_documents_that_are_not_objects() {
    for doc in ["[]", "42", "\"text\"", "null", "true"] {
        assert_eq!(reason(doc), "not_an_object", "{doc}");
    }
}

#[test]
fn rejects_repeated_keys_at_any_depth() {
    let top = example().replacen('{', &format!("{{\"device_id\":\"{DEV}\","), 1);
    assert_eq!(reason(&top), "duplicate_key");
    let in_events = doc_with_events(r#"{"new_process":[],"new_process":[]}"#);
    assert_eq!(reason(&in_events), "duplicate_key");
    let in_item = doc_with_events(r#"{"new_process":[{"cmdl":"a","user":"b","cmdl":"c"}]}"#);
    assert_eq!(reason(&in_item), "duplicate_key");
    let in_extra = with_field("events", r#"{}, "x": {"k":1,"k":2}"#);
    assert_eq!(reason(&in_extra), "duplicate_key");
}

#[test]
fn rejects_missing_null_or_mistyped_required_fields() {
    for field in ["submission_id", "device_id", "time_created", "events"] {
        assert_eq!(reason(&without_field(field)), "missing_field", "{field}");
        assert_eq!(reason(&with_field(field, "null")), "null_field", "{field}");
        assert_eq!(reason(&with_field(field, "[]")), "wrong_type", "{field}");
    }
    assert_eq!(reason(&with_field("submission_id", "42")), "wrong_type");
    assert_eq!(reason(&with_field("events", "\"{}\"")), "wrong_type");
    assert_eq!(reason(&doc_with_events(r#"{"new_process":{}}"#)), "wrong_type");
    assert_eq!(reason(&doc_with_events(r#"{"new_process":null}"#)), "wrong_type");
}

#[test]
fn rejects_malformed_uuids() {
    for bad in [
        "8be019740f154d4f809f257a6de4d3f9",
        "{8be01974-0f15-4d4f-809f-257a6de4d3f9}",
        "urn:uuid:8be01974-0f15-4d4f-809f-257a6de4d3f9",
        "8be01974-0f15-4d4f-809f-257a6de4d3fg",
        "8be01974-0f15-4d4f-809f-257a6de4d3f",
        "8be0197-40f15-4d4f-809f-257a6de4d3f9",
        "",
    ] {
        assert_eq!(
            reason(&with_field("submission_id", &format!("\"{bad}\""))),
            "invalid_uuid",
            "{bad}"
        );
        assert_eq!(
            reason(&with_field("device_id", &format!("\"{bad}\""))),
            "invalid_uuid",
            "{bad}"
        );
    }
}

#[test]
fn rejects_malformed_timestamps() {
    for bad in [
        "yesterday",
        "2021-03-29",
        "2021-03-29 12:06:09",
        "2021-03-29T12:06",
        "2021-13-29T12:06:09",
        "2021-03-29T25:06:09",
        "2021-03-29T12:06:09+2",
        "2021-03-29T12:06:09.123456 ",
        "",
        // What chrono's format parser lets through: blanks, one digit for two, signed and
        // five-digit years.
        "2021-3-29T12:06:09",
        "2021-03-9T12:06:09",
        "2021-03-29T2:06:09",
        "+2021-03-29T12:06:09",
        "02021-03-29T12:06:09",
        "2021-03-29T 12:06:09",
        "2021-03-29T12: 06:09",
        " 2021-03-29T12:06:09",
        // The profile: upper-case T and Z, no leap second, 1-9 fraction digits, a day that exists.
        "2021-03-29t12:06:09",
        "2021-03-29T12:06:09z",
        "2021-03-29t12:06:09z",
        "2021-03-29T12:06:60",
        "2021-03-29T12:06:09.",
        "2021-03-29T12:06:09.1234567890",
        "2021-02-29T12:06:09",
        "2021-04-31T12:06:09",
        "2021-03-29T12:06:09+24:00",
        "2021-03-29T12:06:09+02:60",
        "2021-03-29T12:06:09+02:00Z",
        "2021-03-29T12:06:09Z+02:00",
    ] {
        assert_eq!(
            reason(&with_field("time_created", &format!("\"{bad}\""))),
            "invalid_timestamp",
            "{bad}"
        );
    }
}

#[test]
fn rejects_unknown_event_types() {
    assert_eq!(reason(&doc_with_events(r#"{"file_write":[]}"#)), "unknown_event_type");
    assert_eq!(
        reason(&doc_with_events(r#"{"new_process":[],"New_Process":[]}"#)),
        "unknown_event_type"
    );
}

#[test]
fn rejects_items_that_are_not_objects_or_lack_fields() {
    assert_eq!(
        reason(&doc_with_events(r#"{"new_process":["notepad"]}"#)),
        "item_not_object"
    );
    assert_eq!(reason(&doc_with_events(r#"{"new_process":[null]}"#)), "item_not_object");
    assert_eq!(
        reason(&doc_with_events(r#"{"new_process":[{"cmdl":"a"}]}"#)),
        "missing_field"
    );
    assert_eq!(
        reason(&doc_with_events(r#"{"new_process":[{"cmdl":"a","user":null}]}"#)),
        "null_field"
    );
    assert_eq!(
        reason(&doc_with_events(r#"{"new_process":[{"cmdl":1,"user":"b"}]}"#)),
        "wrong_type"
    );
    assert_eq!(
        reason(&doc_with_events(
            r#"{"network_connection":[{"source_ip":"1.2.3.4","destination_ip":"1.2.3.4"}]}"#
        )),
        "missing_field"
    );
}

#[test]
fn one_bad_item_rejects_the_whole_submission() {
    let json = doc_with_events(
        r#"{"new_process":[{"cmdl":"a","user":"b"},{"cmdl":"c","user":"d"}],
            "network_connection":[{"source_ip":"1.2.3.4","destination_ip":"1.2.3.256","destination_port":1}]}"#,
    );
    assert_eq!(reason(&json), "invalid_ipv4");
}

#[test]
fn ipv4_rules() {
    let ok = |ip: &str| reason(&connection(&format!("\"{ip}\""), "\"1.1.1.1\"", "80"));
    for good in ["0.0.0.0", "255.255.255.255", "192.168.0.2", "10.0.0.1"] {
        assert_eq!(ok(good), "accepted", "{good}");
    }
    for bad in [
        "256.1.1.1",
        "01.2.3.4",
        "1.2.3.04",
        "1.2.3",
        "1.2.3.4.5",
        " 1.2.3.4",
        "1.2.3.4 ",
        "1. 2.3.4",
        "+1.2.3.4",
        "1..3.4",
        "a.b.c.d",
        "::1",
        "",
        "1.2.3.4/24",
        "1000.1.1.1",
    ] {
        assert_eq!(ok(bad), "invalid_ipv4", "{bad}");
    }
    assert_eq!(reason(&connection("\"1.1.1.1\"", "\"1.1.1.01\"", "80")), "invalid_ipv4");
    assert_eq!(reason(&connection("3232235522", "\"1.1.1.1\"", "80")), "wrong_type");
}

#[test]
fn port_rules() {
    let port = |p: &str| reason(&connection("\"1.1.1.1\"", "\"2.2.2.2\"", p));
    assert_eq!(port("0"), "accepted");
    assert_eq!(port("65535"), "accepted");
    assert_eq!(port("65536"), "port_out_of_range");
    assert_eq!(port("18446744073709551616"), "port_out_of_range");
    assert_eq!(port("-1"), "port_negative");
    assert_eq!(port("-1.5"), "port_negative");
    // The parser hands -0 over as the float -0.0: a minus sign makes a port negative.
    assert_eq!(port("-0"), "port_negative");
    assert_eq!(port("-0.0"), "port_negative");
    assert_eq!(port("80.5"), "port_not_integer");
    assert_eq!(port("80.0"), "port_not_integer");
    assert_eq!(port("8e1"), "port_not_integer");
    assert_eq!(port("\"80\""), "wrong_type");
    assert_eq!(port("true"), "wrong_type");
    assert_eq!(port("null"), "null_field");
}

#[test]
fn reasons_name_the_offending_field() {
    let r = check(&connection("\"1.1.1.1\"", "\"2.2.2.2\"", "70000")).unwrap_err();
    assert_eq!(
        r.to_string(),
        "field `events.network_connection[0].destination_port` is above 65535"
    );
    let r = check(&doc_with_events(
        r#"{"new_process":[{"cmdl":"a","user":"b"},{"cmdl":"a"}]}"#,
    ))
    .unwrap_err();
    assert_eq!(r.to_string(), "required field `events.new_process[1].user` is missing");
}

#[test]
fn every_label_is_listed() {
    let samples = [
        Rejection::NotBase64(String::new()),
        Rejection::NotUtf8,
        Rejection::NotJson(String::new()),
        Rejection::DuplicateKey(String::new()),
        Rejection::NotAnObject,
        Rejection::MissingField(String::new()),
        Rejection::NullField(String::new()),
        Rejection::WrongType {
            path: String::new(),
            expected: "",
        },
        Rejection::InvalidUuid(""),
        Rejection::InvalidTimestamp,
        Rejection::TimestampTooOld(NaiveDateTime::default()),
        Rejection::TimestampInFuture(0),
        Rejection::UnknownEventType(String::new()),
        Rejection::ItemNotObject(String::new()),
        Rejection::InvalidIpv4(String::new()),
        Rejection::PortNegative(String::new()),
        Rejection::PortNotInteger(String::new()),
        Rejection::PortOutOfRange(String::new()),
        Rejection::RecordTooLarge {
            index: 0,
            bytes: 0,
            limit: 0,
        },
    ];
    let labels: Vec<_> = samples.iter().map(Rejection::label).collect();
    assert_eq!(labels, Rejection::LABELS);
}

#[test]
fn deep_nesting_is_rejected_not_a_crash() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(reason(&with_field("events", &format!("{{}},\"x\":{deep}"))), "not_json");
}

// ---- hostile-input catalogue ----------------------------------------------------------------

use telemetry_testkit::hostile;

/// Every body of the hostile catalogue gets its verdict, through the same steps as the
/// pipeline (decode, then the records); what is accepted is published exactly as written, and
/// every record is valid JSON with all control characters escaped.
#[test]
fn hostile_catalogue_gets_the_verdicts_it_must() {
    let cases = hostile::catalogue();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let now = Utc::now();
    let time_processed = crate::event::format_time_processed(now);
    let mut wrong = Vec::new();
    for case in &cases {
        assert!(
            case.body.len() <= hostile::MAX_BODY_BYTES,
            "{}: body above SQS' limit",
            case.name
        );
        let outcome = decode(&case.body, &TimeBounds::default(), now).and_then(|sub| {
            crate::event::to_records(
                &sub,
                &time_processed,
                crate::event::PartitionKey::SubmissionId,
                1024 * 1024,
            )
            .map(|(key, records)| (sub, key, records))
        });
        match (&case.verdict, outcome) {
            (hostile::Verdict::Invalid(want), Err(got)) if got.label() == *want => {}
            (hostile::Verdict::Valid(want), Ok((sub, key, records))) => {
                assert_eq!(key, want.submission_id, "{}", case.name);
                assert_eq!(sub.device_id.to_string(), want.device_id, "{}", case.name);
                assert_eq!(sub.time_created, want.time_created, "{}", case.name);
                assert_eq!(records.len(), want.events.len(), "{}", case.name);
                for (record, (kind, data)) in records.iter().zip(&want.events) {
                    assert!(
                        record.iter().all(|b| *b >= 0x20),
                        "{}: raw control byte in the record {}",
                        case.name,
                        String::from_utf8_lossy(record)
                    );
                    let value: serde_json::Value = serde_json::from_slice(record).unwrap();
                    assert_eq!(value["type"], *kind, "{}", case.name);
                    assert_eq!(&value["type_specific_data"], data, "{}", case.name);
                }
            }
            (_, got) => wrong.push(format!(
                "{}: want {}, got {:?}",
                case.name,
                case.label(),
                got.map(|(sub, _, _)| sub.events.len())
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

// ---- property tests -------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum GenItem {
    Process(String, String),
    Connection([u8; 4], [u8; 4], u16),
}

fn gen_item() -> impl Strategy<Value = GenItem> {
    prop_oneof![
        (any::<String>(), any::<String>()).prop_map(|(c, u)| GenItem::Process(c, u)),
        (any::<[u8; 4]>(), any::<[u8; 4]>(), any::<u16>()).prop_map(|(s, d, p)| GenItem::Connection(s, d, p)),
    ]
}

fn item_json(item: &GenItem) -> serde_json::Value {
    match item {
        GenItem::Process(cmdl, user) => serde_json::json!({"cmdl": cmdl, "user": user}),
        GenItem::Connection(s, d, p) => serde_json::json!({
            "source_ip": Ipv4Addr::from(*s).to_string(),
            "destination_ip": Ipv4Addr::from(*d).to_string(),
            "destination_port": p,
        }),
    }
}

/// A valid document: `groups` are (type, items) in document order; a type may appear first
/// either way round.
fn gen_document() -> impl Strategy<Value = (Uuid, String, Vec<GenItem>)> {
    (
        any::<u128>(),
        prop::collection::vec(gen_item(), 0..40),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(id, items, connections_first, raw)| {
            let id = Uuid::from_u128(id);
            let processes: Vec<_> = items.iter().filter(|i| matches!(i, GenItem::Process(..))).cloned().collect();
            let connections: Vec<_> = items.iter().filter(|i| matches!(i, GenItem::Connection(..))).cloned().collect();
            let (first, second) = if connections_first {
                (("network_connection", &connections), ("new_process", &processes))
            } else {
                (("new_process", &processes), ("network_connection", &connections))
            };
            let arr = |v: &Vec<GenItem>| serde_json::Value::Array(v.iter().map(item_json).collect()).to_string();
            let json = format!(
                r#"{{"submission_id":"{}","device_id":"{DEV}","time_created":"2021-03-28T15:44:18.5","events":{{"{}":{},"{}":{}}}}}"#,
                if raw { id.hyphenated().to_string().to_uppercase() } else { id.hyphenated().to_string() },
                first.0,
                arr(first.1),
                second.0,
                arr(second.1)
            );
            let mut ordered = first.1.clone();
            ordered.extend(second.1.iter().cloned());
            let body = if raw { json } else { STANDARD.encode(json) };
            (id, body, ordered)
        })
}

fn same(data: &EventData, item: &GenItem) -> bool {
    match (data, item) {
        (EventData::NewProcess { cmdl, user }, GenItem::Process(c, u)) => cmdl == c && user == u,
        (
            EventData::NetworkConnection {
                source_ip,
                destination_ip,
                destination_port,
            },
            GenItem::Connection(s, d, p),
        ) => source_ip.octets() == *s && destination_ip.octets() == *d && destination_port == p,
        _ => false,
    }
}

proptest! {
    #[test]
    fn valid_submissions_explode_in_document_order_with_deterministic_ids((id, body, ordered) in gen_document()) {
        let sub = decode(&body, &TimeBounds::default(), now()).map_err(|r| TestCaseError::fail(r.to_string()))?;
        prop_assert_eq!(sub.submission_id, id);
        prop_assert_eq!(sub.events.len(), ordered.len());
        for (data, item) in sub.events.iter().zip(&ordered) {
            prop_assert!(same(data, item));
        }
        let events = crate::event::explode(&sub, "2021-03-29T12:00:00.000000Z");
        let again = crate::event::explode(&sub, "2021-03-29T13:00:00.000000Z");
        for (i, (e, e2)) in events.iter().zip(&again).enumerate() {
            prop_assert_eq!(e.event_index, i);
            prop_assert_eq!(e.event_count, ordered.len());
            prop_assert_eq!(e.event_id, e2.event_id);
            prop_assert_eq!(e.event_id, crate::event::event_id(id, i));
            prop_assert_eq!(e.submission_id.to_string(), id.hyphenated().to_string());
        }
        let ids: HashSet<_> = events.iter().map(|e| e.event_id).collect();
        prop_assert_eq!(ids.len(), events.len());
    }

    /// Corrupting a valid body (flip, cut or insert bytes) never panics; whatever is accepted
    /// is still a well-formed submission.
    #[test]
    fn corrupted_bodies_never_panic((_, body, _) in gen_document(), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6)) {
        let mut bytes = body.into_bytes();
        for (at, byte, op) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => { bytes.truncate(i); }
                _ => bytes.insert(i, byte),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(sub) = decode(&text, &TimeBounds::default(), now()) {
            let events = crate::event::explode(&sub, "2021-03-29T12:00:00.000000Z");
            prop_assert_eq!(events.len(), sub.events.len());
        }
    }

    /// A valid document with one required rule broken is rejected as a whole.
    #[test]
    fn breaking_one_rule_rejects_the_whole_submission((_, body, ordered) in gen_document(), which in 0usize..6) {
        prop_assume!(!ordered.is_empty());
        let raw = if body.starts_with('{') { body } else { String::from_utf8(STANDARD.decode(&body).unwrap()).unwrap() };
        let mut doc: serde_json::Value = serde_json::from_str(&raw).unwrap();
        let events = doc["events"].as_object_mut().unwrap();
        let (kind, items) = events.iter_mut().find(|(_, v)| !v.as_array().unwrap().is_empty()).unwrap();
        let last = items.as_array_mut().unwrap().last_mut().unwrap().as_object_mut().unwrap();
        let is_process = kind == "new_process";
        let expected = match which {
            0 => { last.remove(if is_process { "user" } else { "source_ip" }); "missing_field" }
            1 => { last.insert(if is_process { "cmdl".into() } else { "destination_port".into() }, serde_json::Value::Null); "null_field" }
            2 => { last.insert(if is_process { "user".into() } else { "destination_port".into() }, serde_json::json!([1])); "wrong_type" }
            3 => { doc["events"]["process_exit"] = serde_json::json!([]); "unknown_event_type" }
            4 => { doc["time_created"] = serde_json::json!("1999-01-01T00:00:00"); "timestamp_too_old" }
            _ => { doc["device_id"] = serde_json::json!("not-a-uuid"); "invalid_uuid" }
        };
        let rejection = decode(&STANDARD.encode(doc.to_string()), &TimeBounds::default(), now()).unwrap_err();
        prop_assert_eq!(rejection.label(), expected);
    }
}

#[test]
fn time_created_is_read_as_utc_with_its_offset_applied_or_as_utc_without_one() {
    let at = |time_created: &str| {
        let sub = check(&with_field("time_created", &format!("\"{time_created}\""))).unwrap();
        sub.time_created_utc().unwrap().to_rfc3339()
    };
    assert_eq!(at("2021-03-28T15:44:18.5"), "2021-03-28T15:44:18.500+00:00");
    assert_eq!(at("2021-03-28T15:44:18Z"), "2021-03-28T15:44:18+00:00");
    assert_eq!(at("2021-03-28T15:44:18+02:00"), "2021-03-28T13:44:18+00:00");
    assert_eq!(at("2021-03-28T00:30:00-01:00"), "2021-03-28T01:30:00+00:00");
}

//! The straight reading against the full one: on documents near the contract (known and
//! unknown keys, repeats, nulls, wrong types, refused values, escaped keys, in any order), a
//! straight reading either gives up or gives what the full reading gives; and the usual valid
//! documents are read straight.

use proptest::prelude::*;

use super::*;
use crate::submission::tests::{DEV, SUB, now};
use crate::submission::{parse_strict_json, validate};

fn full(text: &str) -> Result<Submission, crate::submission::Rejection> {
    validate(parse_strict_json(text)?, &TimeBounds::default(), now())
}

fn straight(text: &str) -> Option<Submission> {
    read(text, &TimeBounds::default(), now())
}

/// Values a field may be given: right, wrong, null, of another type, escaped.
const ID_VALUES: &[&str] = &[
    "\"8be01974-0f15-4d4f-809f-257a6de4d3f9\"",
    "\"8BE01974-0F15-4D4F-809F-257A6DE4D3F9\"",
    "\"\\u0038be01974-0f15-4d4f-809f-257a6de4d3f9\"",
    "\"8be019740f154d4f809f257a6de4d3f9\"",
    "null",
    "42",
    "[]",
];
const TIME_VALUES: &[&str] = &[
    "\"2021-03-28T15:44:18.592840\"",
    "\"2021-03-28T15:44:18Z\"",
    "\"2021-03-28 15:44:18\"",
    "\"2999-01-01T00:00:00\"",
    "null",
    "{}",
];
const STRING_VALUES: &[&str] = &[
    "\"notepad.exe\"",
    "\"a \\\"quoted\\\" \\u00e9\"",
    "\"\"",
    "null",
    "7",
    "true",
];
const IP_VALUES: &[&str] = &[
    "\"192.168.0.2\"",
    "\"23.13.252.39\"",
    "\"1.2.3\"",
    "\"01.2.3.4\"",
    "null",
    "3",
];
const PORT_VALUES: &[&str] = &["443", "0", "65535", "65536", "-1", "-0", "1.0", "1e2", "\"80\"", "null"];
const OTHER_VALUES: &[&str] = &["1", "\"x\"", "null", "[1,{\"a\":2}]", "{\"a\":1,\"a\":2}", "{\"b\":{}}"];

fn entries(keys: &'static [&'static str], values: impl Fn(&str) -> &'static [&'static str]) -> BoxedStrategy<String> {
    let pairs: Vec<BoxedStrategy<String>> = keys
        .iter()
        .map(|&key| {
            prop::sample::select(values(key))
                .prop_map(move |value| format!("\"{key}\":{value}"))
                .boxed()
        })
        .collect();
    prop::collection::vec(prop::strategy::Union::new(pairs), 0..6)
        .prop_map(|fields| format!("{{{}}}", fields.join(",")))
        .boxed()
}

fn new_process_item() -> BoxedStrategy<String> {
    entries(&["cmdl", "user", "c\\u006ddl", "pid", "extra"], |key| match key {
        "pid" | "extra" => OTHER_VALUES,
        _ => STRING_VALUES,
    })
}

fn network_item() -> BoxedStrategy<String> {
    entries(
        &["source_ip", "destination_ip", "destination_port", "protocol"],
        |key| match key {
            "destination_port" => PORT_VALUES,
            "protocol" => OTHER_VALUES,
            _ => IP_VALUES,
        },
    )
}

fn items(item: BoxedStrategy<String>) -> BoxedStrategy<String> {
    prop_oneof![
        6 => prop::collection::vec(item, 0..4).prop_map(|items| format!("[{}]", items.join(","))),
        1 => prop::sample::select(OTHER_VALUES).prop_map(str::to_owned),
    ]
    .boxed()
}

fn events() -> BoxedStrategy<String> {
    let entry = prop_oneof![
        items(new_process_item()).prop_map(|v| format!("\"new_process\":{v}")),
        items(network_item()).prop_map(|v| format!("\"network_connection\":{v}")),
        items(new_process_item()).prop_map(|v| format!("\"file_write\":{v}")),
    ];
    prop_oneof![
        8 => prop::collection::vec(entry, 0..4).prop_map(|e| format!("{{{}}}", e.join(","))),
        1 => prop::sample::select(OTHER_VALUES).prop_map(str::to_owned),
    ]
    .boxed()
}

fn document() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        prop::sample::select(ID_VALUES).prop_map(|v| format!("\"submission_id\":{v}")),
        prop::sample::select(ID_VALUES).prop_map(|v| format!("\"device_id\":{v}")),
        prop::sample::select(TIME_VALUES).prop_map(|v| format!("\"time_created\":{v}")),
        events().prop_map(|v| format!("\"events\":{v}")),
        prop::sample::select(OTHER_VALUES).prop_map(|v| format!("\"sensor_version\":{v}")),
    ];
    // Mostly the four required fields, each once, in a random order, plus a few more.
    let required = (
        prop::sample::select(&ID_VALUES[..3]),
        prop::sample::select(&ID_VALUES[..3]),
        prop::sample::select(&TIME_VALUES[..2]),
        events(),
    )
        .prop_map(|(s, d, t, e)| {
            vec![
                format!("\"submission_id\":{s}"),
                format!("\"device_id\":{d}"),
                format!("\"time_created\":{t}"),
                format!("\"events\":{e}"),
            ]
        });
    (
        required,
        prop::collection::vec(field, 0..3),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(mut fields, extra, rotation, drop_one)| {
            fields.extend(extra);
            let n = rotation.index(fields.len());
            fields.rotate_left(n);
            if drop_one {
                fields.remove(0);
            }
            format!("{{{}}}", fields.join(","))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn a_straight_reading_gives_what_the_full_reading_gives_or_gives_up(text in document()) {
        if let Some(submission) = straight(&text) {
            prop_assert_eq!(Ok(submission), full(&text), "{}", text);
        }
    }
}

#[test]
fn the_usual_valid_documents_are_read_straight() {
    let documents = [
        format!(
            r#"{{"submission_id":"{SUB}","device_id":"{DEV}","time_created":"2021-03-28T15:44:18.592840","events":{{"new_process":[{{"cmdl":"notepad.exe","user":"john"}},{{"pid":4,"user":"admin","cmdl":"who\"ami"}}],"network_connection":[{{"source_ip":"192.168.0.2","protocol":"tcp","destination_ip":"23.13.252.39","destination_port":43696}}]}}}}"#
        ),
        format!(
            r#" {{"events":{{}},"sensor":{{"version":[1,2]}},"time_created":"2021-03-28T15:44:18+02:00","device_id":"{}","submission_id":"{SUB}"}} "#,
            DEV.to_uppercase()
        ),
    ];
    for text in &documents {
        let read = straight(text);
        assert!(read.is_some(), "not read straight: {text}");
        assert_eq!(read, full(text).ok());
    }
}

#[test]
fn documents_that_need_a_reason_are_left_to_the_full_reading() {
    let valid_item = r#"{"cmdl":"a","user":"b"}"#;
    let doc = |events: &str, extra: &str| {
        format!(
            r#"{{"submission_id":"{SUB}","device_id":"{DEV}","time_created":"2021-03-28T15:44:18"{extra},"events":{events}}}"#
        )
    };
    let refused = [
        doc(&format!(r#"{{"new_process":[{valid_item}],"new_process":[]}}"#), ""),
        doc(&format!(r#"{{"new_process":[{valid_item}]}}"#), r#","device_id":"x""#),
        doc(r#"{"new_process":[{"cmdl":"a","user":"b","user":"c"}]}"#, ""),
        doc(r#"{"new_process":[{"cmdl":"a","user":"b","x":1,"x":2}]}"#, ""),
        doc(r#"{"new_process":[{"cmdl":"a","user":"b","x":{"y":1,"y":2}}]}"#, ""),
        doc(r#"{"new_process":[{"cmdl":"a"}]}"#, ""),
        doc(r#"{"new_process":[{"cmdl":"a","user":null}]}"#, ""),
        doc(r#"{"file_write":[]}"#, ""),
        doc(
            r#"{"network_connection":[{"source_ip":"1.2.3.4","destination_ip":"1.2.3.4","destination_port":80.0}]}"#,
            "",
        ),
        doc(
            r#"{"network_connection":[{"source_ip":"1.2.3.4","destination_ip":"1.2.3.04","destination_port":80}]}"#,
            "",
        ),
        doc("[]", ""),
        doc("{}", r#","a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9"#),
        format!("{} x", doc("{}", "")),
    ];
    for text in &refused {
        assert_eq!(straight(text), None, "read straight: {text}");
    }
    // Nine unknown keys are valid: only the straight reading leaves them to the full one.
    assert!(full(&refused[11]).is_ok());
}

//! Submissions for tests, built independently of the collector's own code, with the events each
//! one must produce.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

/// What a valid submission must become on the stream.
#[derive(Debug, Clone)]
pub struct Expected {
    pub submission_id: String,
    pub device_id: String,
    pub time_created: String,
    /// (type, type_specific_data) in document order.
    pub events: Vec<(&'static str, Value)>,
}

/// A valid submission with `processes` new_process and `connections` network_connection events;
/// `connections_first` puts the network_connection key first in the JSON. Ids are written in
/// upper case on odd `n` to check they come out lowercase.
pub fn valid(n: u64, processes: usize, connections: usize, connections_first: bool) -> (String, Expected) {
    let submission_id = format!("{:08x}-0f15-4d4f-809f-{:012x}", n, n * 7919);
    let device_id = format!("31980191-fa99-4768-8a7b-{:012x}", n % 50);
    let time_created = format!("2021-03-28T15:44:{:02}.{:06}", n % 60, n * 13 % 1_000_000);
    let process_items: Vec<Value> = (0..processes)
        .map(|i| json!({"cmdl": format!("proc-{n}-{i} --flag \"quoted\"\n"), "user": format!("user{}", i % 7), "pid": i}))
        .collect();
    let connection_items: Vec<Value> = (0..connections)
        .map(|i| {
            json!({
                "source_ip": format!("10.0.{}.{}", n % 256, i % 256),
                "destination_ip": format!("23.13.{}.39", i % 256),
                "destination_port": (n as usize * 31 + i) % 65536,
            })
        })
        .collect();
    // (type, items, the fields that are published) in the order the JSON lists them.
    let mut groups: [(&'static str, Vec<Value>, &[&str]); 2] = [
        ("new_process", process_items, &["cmdl", "user"]),
        (
            "network_connection",
            connection_items,
            &["source_ip", "destination_ip", "destination_port"],
        ),
    ];
    if connections_first {
        groups.reverse();
    }
    let mut events = Vec::new();
    let mut listed = Vec::new();
    for (kind, items, published) in &groups {
        for item in items {
            let data: Value = published.iter().map(|k| ((*k).to_owned(), item[*k].clone())).collect();
            events.push((*kind, data));
        }
        listed.push(format!("\"{kind}\":{}", Value::Array(items.clone())));
    }
    let events_json = format!("{{{}}}", listed.join(","));
    let (ids_written_sub, ids_written_dev) = if n % 2 == 1 {
        (submission_id.to_uppercase(), device_id.to_uppercase())
    } else {
        (submission_id.clone(), device_id.clone())
    };
    let document = format!(
        r#"{{"submission_id":"{ids_written_sub}","device_id":"{ids_written_dev}","time_created":"{time_created}","sensor_version":"1.2.3","events":{events_json}}}"#
    );
    let expected = Expected {
        submission_id,
        device_id,
        time_created,
        events,
    };
    (STANDARD.encode(document), expected)
}

/// One invalid submission of every class of the specification, as (reason label, body). Each
/// carries its own submission id (where it has one) so tests can check it never reaches the
/// stream.
pub fn invalid_of_every_class(salt: u64) -> Vec<(&'static str, String, Option<String>)> {
    let mut out = Vec::new();
    let mut n = 0u64;
    let mut doc = |label: &'static str, edit: &dyn Fn(&mut Value)| {
        n += 1;
        let id = format!("badbad00-0000-4000-8000-{:06x}{:06x}", salt % 0xffffff, n);
        let mut v = json!({
            "submission_id": id,
            "device_id": "31980191-fa99-4768-8a7b-0e81397ca6ef",
            "time_created": "2021-03-28T15:44:18.592840",
            "events": {
                "new_process": [{"cmdl": "notepad.exe", "user": "john"}],
                "network_connection": [{"source_ip": "192.168.0.2", "destination_ip": "23.13.252.39", "destination_port": 43696}]
            }
        });
        edit(&mut v);
        (label, STANDARD.encode(v.to_string()), Some(id))
    };
    out.push(doc("missing_field", &|v| {
        v.as_object_mut().unwrap().remove("device_id");
    }));
    out.push(doc("null_field", &|v| v["time_created"] = Value::Null));
    out.push(doc("wrong_type", &|v| v["device_id"] = json!(42)));
    out.push(doc("invalid_uuid", &|v| {
        v["device_id"] = json!("31980191fa9947688a7b0e81397ca6ef")
    }));
    out.push(doc("invalid_timestamp", &|v| {
        v["time_created"] = json!("28/03/2021 15:44")
    }));
    out.push(doc("timestamp_too_old", &|v| {
        v["time_created"] = json!("1999-12-31T23:59:59")
    }));
    out.push(doc("timestamp_in_future", &|v| {
        v["time_created"] = json!("2999-01-01T00:00:00")
    }));
    out.push(doc("unknown_event_type", &|v| v["events"]["file_write"] = json!([])));
    out.push(doc("item_not_object", &|v| {
        v["events"]["new_process"] = json!(["notepad.exe"])
    }));
    out.push(doc("missing_field", &|v| {
        v["events"]["network_connection"][0]
            .as_object_mut()
            .unwrap()
            .remove("destination_port");
    }));
    out.push(doc("invalid_ipv4", &|v| {
        v["events"]["network_connection"][0]["source_ip"] = json!("192.168.0.02")
    }));
    out.push(doc("port_out_of_range", &|v| {
        v["events"]["network_connection"][0]["destination_port"] = json!(65536)
    }));
    out.push(doc("port_not_integer", &|v| {
        v["events"]["network_connection"][0]["destination_port"] = json!(80.5)
    }));
    out.push(doc("port_negative", &|v| {
        v["events"]["network_connection"][0]["destination_port"] = json!(-1)
    }));
    out.push(doc("wrong_type", &|v| {
        v["events"]["network_connection"][0]["destination_port"] = json!("80")
    }));
    out.push(doc("wrong_type", &|v| v["events"] = json!([])));
    // Repeated key: serde_json cannot write one, so edit the text.
    let (_, body, id) = doc("duplicate_key", &|_| {});
    let text = String::from_utf8(STANDARD.decode(body).unwrap()).unwrap();
    let repeated = text.replacen(
        "\"cmdl\":\"notepad.exe\"",
        "\"cmdl\":\"notepad.exe\",\"cmdl\":\"calc.exe\"",
        1,
    );
    assert_ne!(text, repeated);
    out.push(("duplicate_key", STANDARD.encode(repeated), id));
    out.push(("not_base64", "this is not base64!".to_owned(), None));
    out.push(("not_utf8", STANDARD.encode([b'{', 0xff, 0xfe, b'}']), None));
    out.push(("not_json", STANDARD.encode("{\"submission_id\": "), None));
    out.push(("not_an_object", STANDARD.encode("[1,2,3]"), None));
    out
}

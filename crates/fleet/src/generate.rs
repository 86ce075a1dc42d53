//! Submissions as sensors write them: valid ones, with the events each must become on the stream,
//! and invalid ones of every class the contract names, each with the reason the collector must give.
//!
//! The documents are written as JSON text here, independently of the collector's decoder, so
//! that tests and the simulator check the collector instead of mirroring it. Documents keep
//! their key order (the order of a submission's events depends on it), which `serde_json`'s map
//! would not, hence the small [`Node`] tree.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{FixedOffset, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::rng::Rng;

/// What a valid submission must become on the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub submission_id: String,
    pub device_id: String,
    pub time_created: String,
    /// (type, type_specific_data) in document order.
    pub events: Vec<(&'static str, Value)>,
}

/// The ways a body can be invalid: one per `Rejection` label that a body alone can cause.
///
/// `record_too_large` is not among them: an event record above Kinesis' 1 MiB limit cannot
/// arrive in an SQS body, which is itself at most 1 MiB before base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidClass {
    NotBase64,
    NotUtf8,
    NotJson,
    DuplicateKey,
    NotAnObject,
    MissingField,
    NullField,
    WrongType,
    InvalidUuid,
    InvalidTimestamp,
    TimestampTooOld,
    TimestampInFuture,
    UnknownEventType,
    ItemNotObject,
    InvalidIpv4,
    PortNegative,
    PortNotInteger,
    PortOutOfRange,
}

impl InvalidClass {
    pub const ALL: [InvalidClass; 18] = [
        InvalidClass::NotBase64,
        InvalidClass::NotUtf8,
        InvalidClass::NotJson,
        InvalidClass::DuplicateKey,
        InvalidClass::NotAnObject,
        InvalidClass::MissingField,
        InvalidClass::NullField,
        InvalidClass::WrongType,
        InvalidClass::InvalidUuid,
        InvalidClass::InvalidTimestamp,
        InvalidClass::TimestampTooOld,
        InvalidClass::TimestampInFuture,
        InvalidClass::UnknownEventType,
        InvalidClass::ItemNotObject,
        InvalidClass::InvalidIpv4,
        InvalidClass::PortNegative,
        InvalidClass::PortNotInteger,
        InvalidClass::PortOutOfRange,
    ];

    /// The `Rejection` label the collector gives a body of this class.
    pub fn label(self) -> &'static str {
        match self {
            InvalidClass::NotBase64 => "not_base64",
            InvalidClass::NotUtf8 => "not_utf8",
            InvalidClass::NotJson => "not_json",
            InvalidClass::DuplicateKey => "duplicate_key",
            InvalidClass::NotAnObject => "not_an_object",
            InvalidClass::MissingField => "missing_field",
            InvalidClass::NullField => "null_field",
            InvalidClass::WrongType => "wrong_type",
            InvalidClass::InvalidUuid => "invalid_uuid",
            InvalidClass::InvalidTimestamp => "invalid_timestamp",
            InvalidClass::TimestampTooOld => "timestamp_too_old",
            InvalidClass::TimestampInFuture => "timestamp_in_future",
            InvalidClass::UnknownEventType => "unknown_event_type",
            InvalidClass::ItemNotObject => "item_not_object",
            InvalidClass::InvalidIpv4 => "invalid_ipv4",
            InvalidClass::PortNegative => "port_negative",
            InvalidClass::PortNotInteger => "port_not_integer",
            InvalidClass::PortOutOfRange => "port_out_of_range",
        }
    }
}

/// One generated submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The SQS message body.
    pub body: String,
    /// The submission id written in the document, when it is a well-formed one (lowercase).
    pub submission_id: Option<String>,
    pub device_id: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Valid(Expected),
    Invalid(InvalidClass),
}

/// How the simulated fleet behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetSettings {
    /// Number of sensors; each submission comes from one of them.
    pub devices: usize,
    /// Share of submissions that are invalid, 0 to 1.
    pub invalid_share: f64,
    /// Cap of events in one submission.
    pub max_events: usize,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            devices: 100,
            invalid_share: 0.05,
            max_events: 500,
        }
    }
}

#[derive(Debug, Clone)]
struct Device {
    id: Uuid,
    /// How far the device's local clock leads UTC (time zones from -12 h to +14 h).
    utc_offset_s: i32,
    /// Some sensor builds write an explicit offset, most write bare local time.
    writes_offset: bool,
    /// Some sensor builds write their ids in upper case.
    uppercase_ids: bool,
}

/// A seeded fleet of sensors: the same seed and settings give the same submissions, for the
/// same `now`.
#[derive(Debug, Clone)]
pub struct Fleet {
    rng: Rng,
    devices: Vec<Device>,
    settings: FleetSettings,
}

impl Fleet {
    pub fn new(seed: u64, settings: FleetSettings) -> Fleet {
        let mut rng = Rng::new(seed);
        let devices = (0..settings.devices.max(1))
            .map(|_| Device {
                id: rng.uuid(),
                utc_offset_s: (rng.between(0, 26 * 4) as i32 - 12 * 4) * 15 * 60,
                writes_offset: rng.chance(0.1),
                uppercase_ids: rng.chance(0.05),
            })
            .collect();
        Fleet { rng, devices, settings }
    }

    /// The next submission; `now` is UTC time, the base of `time_created`.
    pub fn next(&mut self, now: NaiveDateTime) -> Generated {
        let device = self.rng.pick(&self.devices).clone();
        let submission_id = self.rng.uuid();
        let time_created = device_time(&mut self.rng, &device, now);
        let count = event_count(&mut self.rng, self.settings.max_events);
        let (mut doc, expected) = random_document(&mut self.rng, &device, submission_id, time_created, count);
        let submission_id = submission_id.hyphenated().to_string();
        let device_id = device.id.hyphenated().to_string();
        if self.rng.chance(self.settings.invalid_share) {
            let class = *self.rng.pick(&InvalidClass::ALL);
            let (body, id_kept) = spoil(class, &mut doc, &mut self.rng, now);
            Generated {
                body,
                submission_id: id_kept.then_some(submission_id),
                device_id,
                outcome: Outcome::Invalid(class),
            }
        } else {
            Generated {
                body: STANDARD.encode(render(&doc)),
                submission_id: Some(submission_id),
                device_id,
                outcome: Outcome::Valid(expected),
            }
        }
    }
}

/// How many events a submission carries: mostly a few, sometimes none, now and then hundreds.
fn event_count(rng: &mut Rng, max: usize) -> usize {
    let r = rng.unit();
    let n = if r < 0.05 {
        0
    } else if r < 0.65 {
        rng.between(1, 10)
    } else if r < 0.90 {
        rng.between(11, 60)
    } else if r < 0.98 {
        rng.between(61, 200)
    } else {
        rng.between(201, 600)
    };
    (n as usize).min(max)
}

/// The device's local time a moment ago, as that device writes it.
fn device_time(rng: &mut Rng, device: &Device, now_utc: NaiveDateTime) -> String {
    let taken = now_utc - TimeDelta::milliseconds(rng.below(5_000) as i64);
    let local = taken + TimeDelta::seconds(i64::from(device.utc_offset_s));
    match FixedOffset::east_opt(device.utc_offset_s) {
        Some(offset) if device.writes_offset => format!("{}{offset}", local.format("%Y-%m-%dT%H:%M:%S%.6f")),
        _ => local.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
    }
}

/// A JSON document that keeps its key order and can repeat keys or hold raw number text.
#[derive(Debug, Clone)]
enum Node {
    Json(Value),
    /// Written as is: number forms `serde_json` would normalise (`1e6`, `4.43e2`).
    Raw(String),
    Object(Vec<(String, Node)>),
    Array(Vec<Node>),
}

/// A top-level document: its fields in order.
type Doc = Vec<(String, Node)>;

fn render(doc: &Doc) -> String {
    let mut out = String::new();
    render_object(doc, &mut out);
    out
}

fn render_object(entries: &[(String, Node)], out: &mut String) {
    out.push('{');
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(key.clone()).to_string());
        out.push(':');
        render_node(value, out);
    }
    out.push('}');
}

fn render_node(node: &Node, out: &mut String) {
    match node {
        Node::Json(v) => out.push_str(&v.to_string()),
        Node::Raw(text) => out.push_str(text),
        Node::Object(entries) => render_object(entries, out),
        Node::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render_node(item, out);
            }
            out.push(']');
        }
    }
}

fn field(key: &str, value: Value) -> (String, Node) {
    (key.to_owned(), Node::Json(value))
}

const COMMANDS: &[&str] = &[
    "C:\\Windows\\System32\\notepad.exe",
    "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule",
    "powershell.exe -NoProfile -ExecutionPolicy Bypass -File C:\\ops\\inventory.ps1",
    "cmd.exe /c whoami /all",
    "\"C:\\Program Files\\Mozilla Firefox\\firefox.exe\" -contentproc --channel=\"1234\"",
    "rundll32.exe shell32.dll,Control_RunDLL",
    "/usr/sbin/sshd -D -R",
    "/bin/bash -c \"curl -fsSL https://example.com/install.sh | sh\"",
    "python3 /opt/agent/update.py --check --quiet",
    "sudo apt-get upgrade -y",
    "/usr/sbin/cron -f",
    "Überprüfung.exe /größe:42",
    "whoami",
];
const USERS: &[&str] = &[
    "john",
    "admin",
    "SYSTEM",
    "root",
    "alice",
    "bob",
    "NT AUTHORITY\\NETWORK SERVICE",
    "www-data",
    "jürgen",
];
const COMMON_PORTS: &[u16] = &[443, 80, 53, 22, 3389, 445, 8080, 8443, 25, 123];

fn private_ip(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => format!("10.{}.{}.{}", rng.below(256), rng.below(256), rng.between(1, 254)),
        1 => format!("192.168.{}.{}", rng.below(256), rng.between(1, 254)),
        _ => format!("172.{}.{}.{}", rng.between(16, 31), rng.below(256), rng.between(1, 254)),
    }
}

fn public_ip(rng: &mut Rng) -> String {
    format!(
        "{}.{}.{}.{}",
        rng.between(1, 223),
        rng.below(256),
        rng.below(256),
        rng.between(1, 254)
    )
}

/// One random item of `kind`: its document fields (with the odd extra field a newer sensor
/// adds) and the data it must publish.
fn random_item(rng: &mut Rng, kind: &'static str) -> (Node, Value) {
    if kind == NEW_PROCESS {
        let cmdl = *rng.pick(COMMANDS);
        let user = *rng.pick(USERS);
        let mut fields = vec![field("cmdl", json!(cmdl)), field("user", json!(user))];
        if rng.chance(0.2) {
            fields.push(field("pid", json!(rng.between(4, 65_535))));
        }
        if rng.chance(0.5) {
            fields.reverse();
        }
        (Node::Object(fields), json!({"cmdl": cmdl, "user": user}))
    } else {
        let source_ip = private_ip(rng);
        let destination_ip = public_ip(rng);
        let destination_port: u64 = match rng.below(20) {
            0 => 0,
            1 => 65_535,
            2..=11 => u64::from(*rng.pick(COMMON_PORTS)),
            _ => rng.between(1024, 65_535),
        };
        let mut fields = vec![
            field("source_ip", json!(source_ip)),
            field("destination_ip", json!(destination_ip)),
            field("destination_port", json!(destination_port)),
        ];
        if rng.chance(0.2) {
            fields.insert(1, field("protocol", json!("tcp")));
        }
        (
            Node::Object(fields),
            json!({"source_ip": source_ip, "destination_ip": destination_ip, "destination_port": destination_port}),
        )
    }
}

const NEW_PROCESS: &str = "new_process";
const NETWORK_CONNECTION: &str = "network_connection";

/// A valid document with `count` events of both types in a random split and key order.
fn random_document(
    rng: &mut Rng,
    device: &Device,
    submission_id: Uuid,
    time_created: String,
    count: usize,
) -> (Doc, Expected) {
    let processes = rng.below(count as u64 + 1) as usize;
    let mut kinds = [(NEW_PROCESS, processes), (NETWORK_CONNECTION, count - processes)];
    if rng.chance(0.5) {
        kinds.reverse();
    }
    let mut groups = Vec::new();
    let mut events = Vec::with_capacity(count);
    for (kind, n) in kinds {
        // A type without events is left out or written as an empty array, as sensors do both.
        if n == 0 && rng.chance(0.5) {
            continue;
        }
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let (item, data) = random_item(rng, kind);
            items.push(item);
            events.push((kind, data));
        }
        groups.push((kind.to_owned(), Node::Array(items)));
    }
    let written = |id: Uuid| {
        let text = id.hyphenated().to_string();
        if device.uppercase_ids {
            text.to_uppercase()
        } else {
            text
        }
    };
    let mut doc = vec![
        field("submission_id", json!(written(submission_id))),
        field("device_id", json!(written(device.id))),
        field("time_created", json!(time_created)),
        field("sensor_version", json!("4.2.1")),
        ("events".to_owned(), Node::Object(groups)),
    ];
    if rng.chance(0.3) {
        doc.swap(0, 1);
    }
    let expected = Expected {
        submission_id: submission_id.hyphenated().to_string(),
        device_id: device.id.hyphenated().to_string(),
        time_created,
        events,
    };
    (doc, expected)
}

/// The top-level fields the collector requires, in the order it checks them.
const REQUIRED: [&str; 4] = ["submission_id", "device_id", "time_created", "events"];

fn top_mut<'a>(doc: &'a mut Doc, key: &str) -> Option<&'a mut Node> {
    doc.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The fields of one item of `kind`, adding one to the document when it has none, so that an
/// item-level defect always has an item to spoil.
fn some_item<'a>(doc: &'a mut Doc, kind: &'static str, rng: &mut Rng) -> Option<&'a mut Vec<(String, Node)>> {
    let Some(Node::Object(groups)) = top_mut(doc, "events") else {
        return None;
    };
    let position = match groups.iter().position(|(k, _)| k == kind) {
        Some(p) => p,
        None => {
            groups.push((kind.to_owned(), Node::Array(Vec::new())));
            groups.len() - 1
        }
    };
    let Node::Array(items) = &mut groups[position].1 else {
        return None;
    };
    if items.is_empty() {
        items.push(random_item(rng, kind).0);
    }
    let index = rng.below(items.len() as u64) as usize;
    match &mut items[index] {
        Node::Object(fields) => Some(fields),
        _ => None,
    }
}

fn set_field(fields: &mut Vec<(String, Node)>, key: &str, value: Node) {
    match fields.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => fields.push((key.to_owned(), value)),
    }
}

fn random_kind(rng: &mut Rng) -> &'static str {
    if rng.chance(0.5) {
        NEW_PROCESS
    } else {
        NETWORK_CONNECTION
    }
}

fn item_fields(kind: &str) -> &'static [&'static str] {
    if kind == NEW_PROCESS {
        &["cmdl", "user"]
    } else {
        &["source_ip", "destination_ip", "destination_port"]
    }
}

/// Breaks a valid document in one way of `class` and gives the body, and whether the document
/// still carries its well-formed submission id.
fn spoil(class: InvalidClass, doc: &mut Doc, rng: &mut Rng, now: NaiveDateTime) -> (String, bool) {
    let mut id_kept = true;
    match class {
        InvalidClass::NotBase64 => {
            let encoded = STANDARD.encode(render(doc));
            let body = match rng.below(4) {
                // MIME-style line breaks every 76 characters.
                0 => encoded
                    .as_bytes()
                    .chunks(76)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join("\r\n"),
                // Cut short in transit: no longer a whole number of 4-character groups.
                1 => encoded[..encoded.len() - 1].to_owned(),
                2 => format!("data:application/json;base64,{encoded}"),
                _ => "sensor restarted, no telemetry!".to_owned(),
            };
            return (body, id_kept);
        }
        InvalidClass::NotUtf8 => {
            let text = render(doc);
            let bytes: Vec<u8> = match rng.below(3) {
                // Windows sensors that write UTF-16 with a byte-order mark.
                0 => [0xFF, 0xFE]
                    .into_iter()
                    .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
                    .collect(),
                // Latin-1 text inside a string ("José").
                1 => {
                    let mut b = text.into_bytes();
                    let at = b.iter().position(|&c| c == b':').map_or(0, |p| p + 2);
                    b.splice(at..at, [b'J', b'o', b's', 0xE9]);
                    b
                }
                _ => {
                    let mut b = text.into_bytes();
                    b.extend_from_slice(&[0xC3, 0x28]);
                    b
                }
            };
            return (STANDARD.encode(bytes), id_kept);
        }
        InvalidClass::NotJson => {
            let text = render(doc);
            let broken = match rng.below(3) {
                0 => {
                    let cut = rng.between(1, text.len() as u64 - 1) as usize;
                    let cut = (0..=cut).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
                    text[..cut].to_owned()
                }
                1 => format!("{text}}}"),
                _ => text.replace('"', "'"),
            };
            return (STANDARD.encode(broken), id_kept);
        }
        InvalidClass::NotAnObject => {
            let text = match rng.below(4) {
                0 => format!("[{}]", render(doc)),
                1 => "null".to_owned(),
                2 => "\"telemetry\"".to_owned(),
                _ => "42".to_owned(),
            };
            return (STANDARD.encode(text), id_kept);
        }
        InvalidClass::DuplicateKey => {
            if rng.chance(0.5) {
                let index = rng.below(doc.len() as u64) as usize;
                let repeated = doc[index].clone();
                doc.insert(index + 1, repeated);
            } else {
                let kind = random_kind(rng);
                if let Some(fields) = some_item(doc, kind, rng) {
                    let index = rng.below(fields.len() as u64) as usize;
                    let repeated = fields[index].clone();
                    fields.push(repeated);
                }
            }
        }
        InvalidClass::MissingField | InvalidClass::NullField => {
            let remove = class == InvalidClass::MissingField;
            if rng.chance(0.5) {
                let key = *rng.pick(&REQUIRED);
                id_kept = key != "submission_id";
                if remove {
                    doc.retain(|(k, _)| k != key);
                } else if let Some(v) = top_mut(doc, key) {
                    *v = Node::Json(Value::Null);
                }
            } else {
                let kind = random_kind(rng);
                let key = *rng.pick(item_fields(kind));
                if let Some(fields) = some_item(doc, kind, rng) {
                    if remove {
                        fields.retain(|(k, _)| k != key);
                    } else {
                        set_field(fields, key, Node::Json(Value::Null));
                    }
                }
            }
        }
        InvalidClass::WrongType => match rng.below(8) {
            0 => {
                id_kept = false;
                set_field(doc, "submission_id", Node::Json(json!(rng.next_u64())));
            }
            1 => set_field(doc, "device_id", Node::Json(json!(true))),
            // Seconds since the epoch instead of a date-time.
            2 => set_field(doc, "time_created", Node::Json(json!(now.and_utc().timestamp()))),
            3 => set_field(doc, "events", Node::Array(Vec::new())),
            4 => {
                // A type's events as one object instead of an array of them.
                let (item, _) = random_item(rng, NEW_PROCESS);
                if let Some(Node::Object(groups)) = top_mut(doc, "events") {
                    match groups.iter_mut().find(|(k, _)| k == NEW_PROCESS) {
                        Some((_, v)) => *v = item,
                        None => groups.push((NEW_PROCESS.to_owned(), item)),
                    }
                }
            }
            5 => {
                // The command line as an argv array.
                if let Some(fields) = some_item(doc, NEW_PROCESS, rng) {
                    set_field(fields, "cmdl", Node::Json(json!(["cmd.exe", "/c", "dir"])));
                }
            }
            6 => {
                // A numeric uid, or an address as a 32-bit number.
                if rng.chance(0.5) {
                    if let Some(fields) = some_item(doc, NEW_PROCESS, rng) {
                        set_field(fields, "user", Node::Json(json!(1000)));
                    }
                } else if let Some(fields) = some_item(doc, NETWORK_CONNECTION, rng) {
                    set_field(fields, "destination_ip", Node::Json(json!(387_775_527u32)));
                }
            }
            _ => {
                if let Some(fields) = some_item(doc, NETWORK_CONNECTION, rng) {
                    set_field(fields, "destination_port", Node::Json(json!("443")));
                }
            }
        },
        InvalidClass::InvalidUuid => {
            let key = if rng.chance(0.5) { "submission_id" } else { "device_id" };
            id_kept = key != "submission_id";
            let id = rng.uuid();
            let text = match rng.below(5) {
                0 => id.simple().to_string(),
                1 => id.braced().to_string(),
                2 => id.urn().to_string(),
                3 => id.hyphenated().to_string()[..35].to_owned(),
                _ => format!("g{}", &id.hyphenated().to_string()[1..]),
            };
            set_field(doc, key, Node::Json(json!(text)));
        }
        InvalidClass::InvalidTimestamp => {
            let forms = [
                now.format("%d/%m/%Y %H:%M:%S").to_string(),
                now.format("%Y-%m-%d %H:%M:%S").to_string(),
                now.format("%Y-%m-%d").to_string(),
                now.and_utc().timestamp().to_string(),
                "2021-02-30T10:00:00".to_owned(),
                "2021-03-28T25:61:00".to_owned(),
                String::new(),
            ];
            set_field(doc, "time_created", Node::Json(json!(rng.pick(&forms))));
        }
        InvalidClass::TimestampTooOld => {
            // A clock reset to the epoch, or a dead CMOS battery.
            let year = rng.between(1970, 1999) as i32;
            let old = NaiveDate::from_ymd_opt(year, 1 + rng.below(12) as u32, 1 + rng.below(28) as u32)
                .and_then(|d| d.and_hms_opt(rng.below(24) as u32, rng.below(60) as u32, 0))
                .unwrap_or_default();
            set_field(
                doc,
                "time_created",
                Node::Json(json!(old.format("%Y-%m-%dT%H:%M:%S%.6f").to_string())),
            );
        }
        InvalidClass::TimestampInFuture => {
            let ahead = TimeDelta::hours(30) + TimeDelta::minutes(rng.below(2_000 * 24 * 60) as i64);
            let future = now + ahead;
            set_field(
                doc,
                "time_created",
                Node::Json(json!(future.format("%Y-%m-%dT%H:%M:%S%.6f").to_string())),
            );
        }
        InvalidClass::UnknownEventType => {
            let kind = *rng.pick(&[
                "file_write",
                "registry_set",
                "dns_query",
                "New_Process",
                "network_connections",
            ]);
            let (item, _) = random_item(rng, NEW_PROCESS);
            if let Some(Node::Object(groups)) = top_mut(doc, "events") {
                let at = rng.below(groups.len() as u64 + 1) as usize;
                groups.insert(at, (kind.to_owned(), Node::Array(vec![item])));
            }
        }
        InvalidClass::ItemNotObject => {
            let kind = random_kind(rng);
            let bad = match rng.below(4) {
                0 => json!("notepad.exe"),
                1 => json!(null),
                2 => json!(7),
                _ => json!(["10.0.0.1", "8.8.8.8", 53]),
            };
            if let Some(Node::Object(groups)) = top_mut(doc, "events") {
                match groups.iter_mut().find(|(k, _)| k == kind) {
                    Some((_, Node::Array(items))) if !items.is_empty() => {
                        let index = rng.below(items.len() as u64) as usize;
                        items[index] = Node::Json(bad);
                    }
                    Some((_, Node::Array(items))) => items.push(Node::Json(bad)),
                    _ => groups.push((kind.to_owned(), Node::Array(vec![Node::Json(bad)]))),
                }
            }
        }
        InvalidClass::InvalidIpv4 => {
            let key = if rng.chance(0.5) { "source_ip" } else { "destination_ip" };
            let text = *rng.pick(&[
                "192.168.000.1",
                "256.12.1.1",
                "10.0.0",
                "10.0.0.1.5",
                " 10.0.0.1",
                "::1",
                "fe80::1ff:fe23:4567:890a",
                "localhost",
                "",
                "10.0.0.-1",
            ]);
            if let Some(fields) = some_item(doc, NETWORK_CONNECTION, rng) {
                set_field(fields, key, Node::Json(json!(text)));
            }
        }
        InvalidClass::PortNegative | InvalidClass::PortNotInteger | InvalidClass::PortOutOfRange => {
            let forms: &[&str] = match class {
                InvalidClass::PortNegative => &["-1", "-443", "-65535"],
                InvalidClass::PortNotInteger => &["80.5", "443.0", "4.43e2", "0.5"],
                _ => &["65536", "70000", "99999", "1e6", "18446744073709551616"],
            };
            let text = *rng.pick(forms);
            if let Some(fields) = some_item(doc, NETWORK_CONNECTION, rng) {
                set_field(fields, "destination_port", Node::Raw(text.to_owned()));
            }
        }
    }
    (STANDARD.encode(render(doc)), id_kept)
}

/// A valid submission with `processes` new_process and `connections` network_connection events;
/// `connections_first` puts the network_connection key first in the JSON. Ids are written in
/// upper case on odd `n` to check they come out lowercase. Deterministic in `n`, for tests that
/// need a particular shape.
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
        (NEW_PROCESS, process_items, &["cmdl", "user"]),
        (
            NETWORK_CONNECTION,
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
        listed.push((
            (*kind).to_owned(),
            Node::Array(items.iter().cloned().map(Node::Json).collect()),
        ));
    }
    let written = |id: &str| if n % 2 == 1 { id.to_uppercase() } else { id.to_owned() };
    let doc: Doc = vec![
        field("submission_id", json!(written(&submission_id))),
        field("device_id", json!(written(&device_id))),
        field("time_created", json!(time_created)),
        field("sensor_version", json!("1.2.3")),
        ("events".to_owned(), Node::Object(listed)),
    ];
    let expected = Expected {
        submission_id,
        device_id,
        time_created,
        events,
    };
    (STANDARD.encode(render(&doc)), expected)
}

/// One invalid submission of every class, as (reason label, body, the well-formed submission id
/// it carries), so tests can check none of them reaches the stream. Deterministic in `salt`.
pub fn invalid_of_every_class(salt: u64) -> Vec<(&'static str, String, Option<String>)> {
    let now = Utc::now().naive_utc();
    InvalidClass::ALL
        .iter()
        .enumerate()
        .map(|(n, class)| {
            let id = format!("badbad00-0000-4000-8000-{:06x}{:06x}", salt % 0xff_ffff, n + 1);
            let mut doc: Doc = vec![
                field("submission_id", json!(id)),
                field("device_id", json!("31980191-fa99-4768-8a7b-0e81397ca6ef")),
                field("time_created", json!("2021-03-28T15:44:18.592840")),
                (
                    "events".to_owned(),
                    Node::Object(vec![
                        (
                            NEW_PROCESS.to_owned(),
                            Node::Array(vec![Node::Json(json!({"cmdl": "notepad.exe", "user": "john"}))]),
                        ),
                        (
                            NETWORK_CONNECTION.to_owned(),
                            Node::Array(vec![Node::Json(
                                json!({"source_ip": "192.168.0.2", "destination_ip": "23.13.252.39", "destination_port": 43696}),
                            )]),
                        ),
                    ]),
                ),
            ];
            // Items as ordered objects, so that item-level defects can edit them.
            if let Some(Node::Object(groups)) = top_mut(&mut doc, "events") {
                for (_, items) in groups.iter_mut() {
                    if let Node::Array(items) = items {
                        for item in items.iter_mut() {
                            if let Node::Json(Value::Object(map)) = item {
                                *item = Node::Object(map.iter().map(|(k, v)| field(k, v.clone())).collect());
                            }
                        }
                    }
                }
            }
            let mut rng = Rng::new(salt.wrapping_mul(1_000).wrapping_add(n as u64));
            let (body, id_kept) = spoil(*class, &mut doc, &mut rng, now);
            (class.label(), body, id_kept.then_some(id))
        })
        .collect()
}

#[cfg(test)]
mod tests;

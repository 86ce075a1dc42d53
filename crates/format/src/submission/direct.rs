//! The common case, read straight into a submission.
//!
//! Almost every body is a valid submission. Building the whole document first (an entry list
//! per object, each field looked up by name afterwards) was most of decoding's cost, for a
//! result that is thrown away. Here the parser hands each field to the place it goes. Only a
//! document that is valid for certain is read this way: anything the rules might refuse, or
//! that needs a reason (a repeated or missing key, a null, a wrong type, a value a rule
//! refuses, an unknown event type), gives up, and the document is read again the full way,
//! which names the first broken rule. So a body is accepted here exactly when the full reading
//! accepts it, with the same result, and an invalid body costs at most two readings.

use std::borrow::Cow;
use std::fmt;
use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{
    EventData, Json, Key, Submission, TextVisitor, TimeBounds, check_time_created, parse_dotted_quad, parse_uuid,
};

/// The submission in `text` when it is valid and reads straight through; `None` when it must
/// be read the full way (it may still be valid: the full reading decides).
pub(super) fn read(text: &str, bounds: &TimeBounds, now: DateTime<Utc>) -> Option<Submission> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let top = deserializer.deserialize_map(TopVisitor).ok()?;
    deserializer.end().ok()?;
    let submission_id = parse_uuid(top.submission_id.as_deref()?)?;
    let device_id = parse_uuid(top.device_id.as_deref()?)?;
    let time_created = top.time_created?;
    check_time_created(&time_created, bounds, now).ok()?;
    Some(Submission {
        submission_id,
        device_id,
        time_created: time_created.into_owned(),
        events: top.events?,
    })
}

/// The error that ends a straight reading; never shown, the full reading gives the reason.
fn give_up<E: de::Error>() -> E {
    E::custom("read the full way")
}

/// Fields other than the known ones, each checked once: a repeated key is for the full
/// reading to name. Few are expected; past this many, the full reading takes the document.
const UNKNOWN_KEYS_TRACKED: usize = 8;

/// Skips the value of a key the contract does not know, after checking that the key is new
/// among the unknown ones; the value is parsed as the full reading parses it (so a repeated key
/// inside it gives up too).
fn skip_unknown<'de, A: MapAccess<'de>>(
    map: &mut A,
    key: Cow<'de, str>,
    seen: &mut Vec<Cow<'de, str>>,
) -> Result<(), A::Error> {
    if seen.len() >= UNKNOWN_KEYS_TRACKED || seen.contains(&key) {
        return Err(give_up());
    }
    seen.push(key);
    map.next_value::<Json>()?;
    Ok(())
}

/// Sets a field that must appear once.
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(give_up());
    }
    *slot = Some(value);
    Ok(())
}

#[derive(Default)]
struct Top<'de> {
    submission_id: Option<Cow<'de, str>>,
    device_id: Option<Cow<'de, str>>,
    time_created: Option<Cow<'de, str>>,
    events: Option<Vec<EventData>>,
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a submission")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
        let mut top = Top::default();
        let mut unknown = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "submission_id" => once(&mut top.submission_id, map.next_value::<Text>()?.0)?,
                "device_id" => once(&mut top.device_id, map.next_value::<Text>()?.0)?,
                "time_created" => once(&mut top.time_created, map.next_value::<Text>()?.0)?,
                "events" => once(&mut top.events, map.next_value_seed(EventsSeed)?)?,
                _ => skip_unknown(&mut map, key, &mut unknown)?,
            }
        }
        Ok(top)
    }
}

/// A JSON string, borrowed from the text unless it holds escapes; any other value gives up.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor).map(Text)
    }
}

/// The `events` object: its items, in document order, each type's array in its turn.
struct EventsSeed;

impl<'de> DeserializeSeed<'de> for EventsSeed {
    type Value = Vec<EventData>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<EventData>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EventsSeed {
    type Value = Vec<EventData>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the events object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<EventData>, A::Error> {
        let mut events = Vec::new();
        let (mut new_process, mut network_connection) = (false, false);
        while let Some(Key(key)) = map.next_key()? {
            let (seen, kind) = match &*key {
                EventData::NEW_PROCESS => (&mut new_process, Kind::NewProcess),
                EventData::NETWORK_CONNECTION => (&mut network_connection, Kind::NetworkConnection),
                // An unknown type refuses the submission: the full reading says so.
                _ => return Err(give_up()),
            };
            if std::mem::replace(seen, true) {
                return Err(give_up());
            }
            map.next_value_seed(ItemsSeed {
                kind,
                events: &mut events,
            })?;
        }
        Ok(events)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    NewProcess,
    NetworkConnection,
}

/// One type's array of items, appended to the events read so far.
struct ItemsSeed<'v> {
    kind: Kind,
    events: &'v mut Vec<EventData>,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.events.reserve(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(event) = seq.next_element_seed(ItemSeed(self.kind))? {
            self.events.push(event);
        }
        Ok(())
    }
}

/// One item: an object with its type's fields, each once, each of its type.
struct ItemSeed(Kind);

impl<'de> DeserializeSeed<'de> for ItemSeed {
    type Value = EventData;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<EventData, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed {
    type Value = EventData;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an item")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EventData, A::Error> {
        let mut unknown = Vec::new();
        match self.0 {
            Kind::NewProcess => {
                let (mut cmdl, mut user) = (None, None);
                while let Some(Key(key)) = map.next_key()? {
                    match &*key {
                        "cmdl" => once(&mut cmdl, map.next_value::<Text>()?.0.into_owned())?,
                        "user" => once(&mut user, map.next_value::<Text>()?.0.into_owned())?,
                        _ => skip_unknown(&mut map, key, &mut unknown)?,
                    }
                }
                match (cmdl, user) {
                    (Some(cmdl), Some(user)) => Ok(EventData::NewProcess { cmdl, user }),
                    _ => Err(give_up()),
                }
            }
            Kind::NetworkConnection => {
                let (mut source_ip, mut destination_ip, mut destination_port) = (None, None, None);
                while let Some(Key(key)) = map.next_key()? {
                    match &*key {
                        "source_ip" => once(&mut source_ip, map.next_value::<Dotted>()?.0)?,
                        "destination_ip" => once(&mut destination_ip, map.next_value::<Dotted>()?.0)?,
                        "destination_port" => once(&mut destination_port, map.next_value::<Port>()?.0)?,
                        _ => skip_unknown(&mut map, key, &mut unknown)?,
                    }
                }
                match (source_ip, destination_ip, destination_port) {
                    (Some(source_ip), Some(destination_ip), Some(destination_port)) => {
                        Ok(EventData::NetworkConnection {
                            source_ip,
                            destination_ip,
                            destination_port,
                        })
                    }
                    _ => Err(give_up()),
                }
            }
        }
    }
}

/// An IPv4 address in the contract's dotted-quad form; anything else gives up.
struct Dotted(Ipv4Addr);

impl<'de> Deserialize<'de> for Dotted {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Text(text) = Text::deserialize(deserializer)?;
        parse_dotted_quad(&text).map(Dotted).ok_or_else(give_up)
    }
}

/// A port: a JSON integer 0-65535 written without a fraction or exponent (which the parser
/// hands over as a float); anything else gives up.
struct Port(u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PortVisitor)
    }
}

struct PortVisitor;

impl<'de> Visitor<'de> for PortVisitor {
    type Value = Port;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a port")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
        u16::try_from(v).map(Port).map_err(|_| give_up())
    }
}

#[cfg(test)]
#[path = "direct_tests.rs"]
mod tests;

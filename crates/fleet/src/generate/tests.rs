use std::collections::HashSet;

use chrono::{DateTime, NaiveDate};

use super::*;
use telemetry_format::submission::{EventData, Rejection, TimeBounds, decode};

fn now() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(2026, 3, 28)
        .and_then(|d| d.and_hms_micro_opt(15, 44, 18, 592_840))
        .unwrap()
        .and_utc()
}

/// The published data of a decoded event, in the shape of [`Expected::events`].
fn published(event: &EventData) -> (&'static str, Value) {
    match event {
        EventData::NewProcess { cmdl, user } => (event.type_name(), json!({"cmdl": cmdl, "user": user})),
        EventData::NetworkConnection {
            source_ip,
            destination_ip,
            destination_port,
        } => (
            event.type_name(),
            json!({"source_ip": source_ip.to_string(), "destination_ip": destination_ip.to_string(), "destination_port": destination_port}),
        ),
    }
}

fn check(generated: &Generated) {
    let decoded = decode(&generated.body, &TimeBounds::default(), now());
    match (&generated.outcome, decoded) {
        (Outcome::Valid(expected), Ok(submission)) => {
            assert_eq!(submission.submission_id.to_string(), expected.submission_id);
            assert_eq!(submission.device_id.to_string(), expected.device_id);
            assert_eq!(submission.time_created, expected.time_created);
            let events: Vec<_> = submission.events.iter().map(published).collect();
            assert_eq!(events, expected.events);
            assert_eq!(
                generated.submission_id.as_deref(),
                Some(expected.submission_id.as_str())
            );
        }
        (Outcome::Invalid(class), Err(rejection)) => {
            assert_eq!(
                rejection.label(),
                class.label(),
                "{rejection} for body {:.300}",
                generated.body
            );
        }
        (outcome, decoded) => panic!("{outcome:?} decoded as {decoded:?}: {:.300}", generated.body),
    }
}

#[test]
fn classes_are_the_rejections_a_body_can_cause() {
    let labels: Vec<&str> = InvalidClass::ALL.iter().map(|c| c.label()).collect();
    let mut body_labels: Vec<&str> = Rejection::LABELS.to_vec();
    body_labels.retain(|l| *l != "record_too_large");
    assert_eq!(labels, body_labels);
}

#[test]
fn every_generated_submission_decodes_as_intended() {
    let settings = FleetSettings {
        devices: 50,
        invalid_share: 0.5,
        max_events: 600,
    };
    let mut fleet = Fleet::new(42, settings);
    let mut classes = HashSet::new();
    let mut counts = Vec::new();
    for _ in 0..3_000 {
        let g = fleet.next(now().naive_utc());
        check(&g);
        match &g.outcome {
            Outcome::Invalid(class) => {
                classes.insert(*class);
            }
            Outcome::Valid(e) => counts.push(e.events.len()),
        }
    }
    assert_eq!(classes.len(), InvalidClass::ALL.len(), "every class is generated");
    assert!(counts.contains(&0), "some submissions have no events");
    assert!(counts.iter().any(|&n| n >= 200), "some have hundreds");
}

#[test]
fn each_class_in_many_variants_is_rejected_for_its_reason() {
    for seed in 0..200 {
        let fleet = Fleet::new(seed, FleetSettings::default());
        let mut rng = Rng::new(seed);
        for class in InvalidClass::ALL {
            let device = rng.pick(&fleet.devices).clone();
            let id = rng.uuid();
            let count = event_count(&mut rng, 20);
            let time = device_time(&mut rng, &device, now().naive_utc());
            let (mut doc, _) = random_document(&mut rng, &device, id, time, count);
            let (body, _) = spoil(class, &mut doc, &mut rng, now().naive_utc());
            let rejection = decode(&body, &TimeBounds::default(), now()).expect_err(class.label());
            assert_eq!(rejection.label(), class.label(), "{rejection}");
        }
    }
}

#[test]
fn same_seed_same_submissions() {
    let run = |seed| {
        let mut fleet = Fleet::new(seed, FleetSettings::default());
        (0..200).map(|_| fleet.next(now().naive_utc())).collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn settings_are_obeyed() {
    let mut fleet = Fleet::new(
        3,
        FleetSettings {
            devices: 3,
            invalid_share: 0.0,
            max_events: 5,
        },
    );
    let generated: Vec<Generated> = (0..500).map(|_| fleet.next(now().naive_utc())).collect();
    let devices: HashSet<&str> = generated.iter().map(|g| g.device_id.as_str()).collect();
    assert_eq!(devices.len(), 3);
    for g in &generated {
        let Outcome::Valid(e) = &g.outcome else {
            panic!("no invalid ones at share 0")
        };
        assert!(e.events.len() <= 5);
    }
}

#[test]
fn fixed_shapes_for_tests_decode() {
    let (body, expected) = valid(1, 3, 2, true);
    let g = Generated {
        body,
        submission_id: Some(expected.submission_id.clone()),
        device_id: expected.device_id.clone(),
        outcome: Outcome::Valid(expected),
    };
    check(&g);
    let all = invalid_of_every_class(9);
    assert_eq!(all.len(), InvalidClass::ALL.len());
    for (label, body, _) in all {
        let rejection = decode(&body, &TimeBounds::default(), Utc::now()).expect_err(label);
        assert_eq!(rejection.label(), label, "{rejection}");
    }
}

//! A stream that throttles whole calls: backoff, resends in order, and no delete before
//! publication.

use crate::rig::{AwsError, Op, Rig, exactly_once_in_order};

#[tokio::test(start_paused = true)]
async fn whole_call_throttling_backs_off_resends_in_order_and_deletes_nothing_before_it_is_published() {
    let rig = Rig::start(&[("DATA_STREAM_CONCURRENCY", "1")]).await;
    rig.fake.fail_calls(Op::PutRecords, 4, AwsError::throughput_exceeded());
    let sent: Vec<_> = (1..=3).map(|n| rig.send(n, 5)).collect();
    rig.wait_until_queue_empty().await;

    let calls = rig.fake.calls(Op::PutRecords);
    let throttled = calls.iter().take_while(|c| c.error.is_some()).count();
    assert_eq!(throttled, 4, "{calls:?}");
    assert!(calls.iter().skip(4).all(|c| c.error.is_none()));
    let gaps: Vec<_> = calls[..5].windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps.windows(2).all(|g| g[1] >= g[0]),
        "the waits between attempts do not shrink: {gaps:?}"
    );
    assert!(gaps[3] > gaps[0], "the waits between attempts grow: {gaps:?}");
    let published_at = calls[4].at;
    assert!(
        rig.fake
            .calls(Op::DeleteMessageBatch)
            .iter()
            .all(|c| c.at >= published_at),
        "a delete came before the first call that wrote"
    );
    let resent: usize = calls[..4].iter().map(|c| c.entries).sum();
    assert_eq!(
        rig.metric("telemetry_collector_records_retried_total{error_code=\"call_failed\"}"),
        resent as f64
    );
    assert_eq!(
        rig.metric("telemetry_collector_put_records_calls_total{outcome=\"error\"}"),
        4.0
    );
    exactly_once_in_order(&rig, &sent);
    rig.stop().await;
}

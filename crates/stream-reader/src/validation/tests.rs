use super::*;
use crate::outputs::{Landed, Out};
use clap::Parser as _;
use log_schema::DeadLetter;
use pipeline_runtime::failure::ReportedAt;
use rdkafka::{error::KafkaError, types::RDKafkaErrorCode};
use std::sync::atomic::Ordering::Relaxed;

/// A reader whose clients point at a closed port: created, never connected. Nothing here
/// needs a broker; what is sent stays in librdkafka's queue.
fn offline_reader() -> (Reader, Arc<ReaderStats>) {
    let args = ReaderArgs::try_parse_from([
        "stream-reader",
        "--kafka-broker",
        "127.0.0.1:1",
        "--retry-min-delay-ms",
        "1",
        "--retry-max-delay-ms",
        "10",
    ])
    .expect("args");
    let readiness = observe::Readiness::default();
    let context = PipelineContext::new(readiness.clone(), Arc::default());
    let stats = Arc::new(ReaderStats::default());
    let reader = Reader::new(
        args,
        context,
        readiness,
        stats.clone(),
        geoip::GeoIp::open(None, None),
        crate::threats::ThreatLists::open(&Default::default()),
    )
    .expect("reader");
    (reader, stats)
}

fn validated_out(reader: &Reader) -> Out {
    Out {
        topic: reader.topics.validated.clone(),
        key: Some(b"10.0.0.1".to_vec()),
        payload: br#"{"validated":true}"#.to_vec(),
    }
}

const RECORD: Owner = Owner {
    partition: 2,
    offset: 7,
    kind: None,
    paired: false,
    copy: false,
};

#[tokio::test]
async fn a_paired_record_finishes_when_both_outputs_landed_in_either_order() {
    let (mut reader, stats) = offline_reader();
    for (first, second) in [(false, true), (true, false)] {
        let valid = stats.valid.load(Relaxed);
        let (a, b) = [first, second]
            .map(|copy| Owner {
                paired: true,
                copy,
                // What replaced a refused copy does not change what the record counts as.
                kind: copy.then_some(ErrorKind::OutputRejected),
                ..RECORD
            })
            .into();
        reader.flow.started(&reader.consumer);
        reader.flow.started(&reader.consumer);
        reader.on_done(a);
        assert_eq!(
            stats.valid.load(Relaxed),
            valid,
            "one half is not the record"
        );
        assert_eq!(reader.halves.len(), 1);
        reader.on_done(b);
        assert_eq!(stats.valid.load(Relaxed), valid + 1);
        assert_eq!(stats.invalid.load(Relaxed), 0);
        assert!(reader.halves.is_empty());
        assert_eq!(reader.flow.in_flight(), 0);
    }
    // Two validated outputs of the record (one from an earlier read, still retried after a
    // revocation) are not a pair: the record waits for its copy.
    let valid = stats.valid.load(Relaxed);
    let [validated, copy] = [false, true].map(|copy| Owner {
        paired: true,
        copy,
        ..RECORD
    });
    for _ in 0..3 {
        reader.flow.started(&reader.consumer);
    }
    reader.on_done(validated);
    reader.on_done(validated);
    assert_eq!(stats.valid.load(Relaxed), valid, "no copy landed yet");
    reader.on_done(copy);
    assert_eq!(stats.valid.load(Relaxed), valid + 1);
    assert!(reader.halves.is_empty());
}

#[tokio::test]
async fn a_lost_delivery_report_is_a_failed_delivery_sent_again() {
    let (mut reader, stats) = offline_reader();
    let (tx, mut rx) = futures::channel::oneshot::channel::<()>();
    drop(tx);
    let canceled = rx.try_recv().expect_err("a dropped sender cancels");
    let out = validated_out(&reader);
    reader.on_landed(Landed {
        owner: RECORD,
        attempt: 0,
        sent_at: Instant::now(),
        out,
        report: Err(canceled),
    });
    let event = tokio::time::timeout(Duration::from_secs(5), reader.outputs.next())
        .await
        .expect("sent again after its backoff");
    let Event::Retry {
        owner,
        attempt,
        out,
    } = event
    else {
        panic!("a retry, not a delivery report");
    };
    assert_eq!(owner, RECORD);
    assert_eq!(attempt, 1);
    assert_eq!(out.payload, br#"{"validated":true}"#);
    assert_eq!(stats.retries.load(Relaxed), 1);
    assert!(reader.fatal.is_none());
}

#[tokio::test]
async fn an_output_refused_for_good_becomes_an_output_rejected_dead_letter() {
    let (mut reader, _) = offline_reader();
    let out = validated_out(&reader);
    let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
    reader.on_failed(&too_large, out, RECORD, 0, ReportedAt::Send);
    assert!(reader.fatal.is_none());
    assert_eq!(
        reader.outputs.in_flight(),
        1,
        "the dead letter is under way"
    );
    let (owner, out) = reader.outputs.pending().next().expect("flight");
    assert_eq!(
        *owner,
        Owner {
            kind: Some(ErrorKind::OutputRejected),
            ..RECORD
        }
    );
    assert_eq!(&*out.topic, &*reader.topics.dlq);
    let dl = DeadLetter::from_json(&out.payload).expect("a dead letter");
    assert_eq!(dl.error.kind, ErrorKind::OutputRejected);
    assert_eq!(dl.raw_bytes().expect("raw"), br#"{"validated":true}"#);
    assert_eq!((dl.source.partition, dl.source.offset), (2, 7));
}

#[tokio::test]
async fn a_missing_output_topic_stops_the_reader_naming_the_setting() {
    let (mut reader, _) = offline_reader();
    let out = validated_out(&reader);
    let missing = KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition);
    reader.on_failed(&missing, out, RECORD, 0, ReportedAt::Delivery);
    let fatal = format!("{:#}", reader.fatal.as_ref().expect("fatal"));
    assert!(
        fatal.contains("`ip_logs_validated` (READER_VALIDATED_TOPIC)"),
        "{fatal}"
    );
    assert!(fatal.contains("does not exist"), "{fatal}");
    assert_eq!(reader.outputs.in_flight(), 0, "not retried");
    let retried = tokio::time::timeout(Duration::from_millis(200), reader.outputs.next()).await;
    assert!(retried.is_err(), "no retry comes due");
}

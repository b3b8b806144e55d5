use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// Parses `lines` with a fresh parser of `format`; the records as JSON values, or the outcome.
fn run(format: Format, lines: &[&str]) -> Vec<Result<Value, Outcome>> {
    let now = DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z")
        .expect("time")
        .to_utc();
    let mut parser = Parser::new(
        format,
        Options {
            now,
            ..Options::default()
        },
    );
    let mut out = Vec::new();
    lines
        .iter()
        .map(|l| match parser.parse(l.as_bytes(), &mut out) {
            Outcome::Record => Ok(serde_json::from_slice(&out).expect("seed JSON")),
            other => Err(other),
        })
        .collect()
}

#[expect(
    clippy::too_many_arguments,
    reason = "the eight seed fields, in the seed's order"
)]
fn seed(
    at: &str,
    src: &str,
    dst: &str,
    port: u16,
    proto: &str,
    sent: u64,
    recv: u64,
    action: &str,
) -> Value {
    json!({"timestamp": at, "source_ip": src, "destination_ip": dst, "port": port,
           "protocol": proto, "bytes_sent": sent, "bytes_received": recv, "action": action})
}

#[test]
fn vpc_default_format_records_and_nodata() {
    // AWS documentation, "Flow log record examples".
    let got = run(
        Format::AwsVpcFlow,
        &[
            "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK",
            "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK",
            "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA",
            "2 123456789010 eni-11111111aaaaaaaaa - - - - - - - 1431280876 1431280934 - SKIPDATA",
            "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641",
        ],
    );
    assert_eq!(
        got[0],
        Ok(seed(
            "2014-12-14T04:06:50.000000Z",
            "172.31.16.139",
            "172.31.16.21",
            22,
            "TCP",
            4249,
            0,
            "ALLOW"
        ))
    );
    assert_eq!(
        got[1],
        Ok(seed(
            "2014-12-14T04:06:50.000000Z",
            "172.31.9.69",
            "172.31.9.12",
            3389,
            "TCP",
            4249,
            0,
            "REJECT"
        ))
    );
    assert_eq!(got[2], Err(Outcome::Skipped(Skip::NoData)));
    assert_eq!(got[3], Err(Outcome::Skipped(Skip::SkipData)));
    assert!(matches!(&got[4], Err(Outcome::Unparsed(e)) if e.reason.contains("6 fields")));
}

#[test]
fn vpc_custom_format_follows_its_header() {
    let got = run(
        Format::AwsVpcFlow,
        &[
            "version vpc-id subnet-id instance-id interface-id account-id type srcaddr dstaddr srcport dstport pkt-srcaddr pkt-dstaddr protocol bytes packets start end action tcp-flags log-status",
            "3 vpc-12345678 subnet-012345678 i-0123 eni-0123 123456789010 IPv4 52.213.180.42 10.0.0.62 43416 5001 52.213.180.42 10.0.0.62 6 568 8 1566848875 1566848933 ACCEPT 2 OK",
        ],
    );
    assert_eq!(got[0], Err(Outcome::Skipped(Skip::Header)));
    assert_eq!(
        got[1],
        Ok(seed(
            "2019-08-26T19:47:55.000000Z",
            "52.213.180.42",
            "10.0.0.62",
            5001,
            "TCP",
            568,
            0,
            "ALLOW"
        ))
    );
}

#[test]
fn zeek_tsv_needs_its_header_and_maps_conn_state() {
    let header = [
        "#separator \\x09",
        "#set_separator\t,",
        "#empty_field\t(empty)",
        "#unset_field\t-",
        "#path\tconn",
        "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\tconn_state",
        "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring",
    ];
    let record = "1320279566.452687\tCKJdX42Y4VETxB2EVl\t192.168.2.76\t52026\t132.235.215.119\t80\ttcp\thttp\t0.1\t1247\t5920\tSF";
    let attempt = "1320279567.000001\tCxx\t192.168.2.76\t52027\t10.0.0.1\t22\ttcp\t-\t-\t-\t-\tS0";
    let mut lines: Vec<&str> = vec![record];
    lines.extend(header);
    lines.push(record);
    lines.push(attempt);
    let got = run(Format::ZeekConn, &lines);
    assert!(matches!(&got[0], Err(Outcome::Unparsed(e)) if e.reason.contains("#fields")));
    assert!(
        got[1..8]
            .iter()
            .all(|g| *g == Err(Outcome::Skipped(Skip::Header)))
    );
    assert_eq!(
        got[8],
        Ok(seed(
            "2011-11-03T00:19:26.452687Z",
            "192.168.2.76",
            "132.235.215.119",
            80,
            "TCP",
            1247,
            5920,
            "ALLOW"
        ))
    );
    assert_eq!(
        got[9],
        Ok(seed(
            "2011-11-03T00:19:27.000001Z",
            "192.168.2.76",
            "10.0.0.1",
            22,
            "TCP",
            0,
            0,
            "DROP"
        ))
    );
}

#[test]
fn zeek_json_with_float_or_iso_time() {
    let got = run(
        Format::ZeekConn,
        &[
            r#"{"ts":1591367999.305988,"uid":"C","id.orig_h":"192.168.4.76","id.orig_p":46378,"id.resp_h":"31.3.245.133","id.resp_p":80,"proto":"tcp","orig_bytes":77,"resp_bytes":295,"conn_state":"REJ"}"#,
            r#"{"ts":"2020-06-05T14:39:59.305988Z","id.orig_h":"fe80::1","id.resp_h":"ff02::1","id.resp_p":0,"proto":"icmp"}"#,
        ],
    );
    assert_eq!(
        got[0],
        Ok(seed(
            "2020-06-05T14:39:59.305988Z",
            "192.168.4.76",
            "31.3.245.133",
            80,
            "TCP",
            77,
            295,
            "REJECT"
        ))
    );
    assert_eq!(
        got[1],
        Ok(seed(
            "2020-06-05T14:39:59.305988Z",
            "fe80::1",
            "ff02::1",
            0,
            "ICMP",
            0,
            0,
            "ALLOW"
        ))
    );
}

#[test]
fn suricata_flow_and_netflow_and_others_skipped() {
    let got = run(
        Format::SuricataEve,
        &[
            r#"{"timestamp":"2017-12-18T14:05:56.021318+0100","flow_id":1,"event_type":"flow","src_ip":"10.0.0.1","src_port":4242,"dest_ip":"10.0.0.2","dest_port":443,"proto":"TCP","flow":{"pkts_toserver":5,"pkts_toclient":4,"bytes_toserver":400,"bytes_toclient":3000,"start":"2017-12-18T14:05:50.000100+0100","end":"2017-12-18T14:05:56.000000+0100","state":"closed"}}"#,
            r#"{"timestamp":"2017-12-18T14:05:56.021318+0100","event_type":"netflow","src_ip":"10.0.0.2","dest_ip":"10.0.0.1","dest_port":4242,"proto":"TCP","netflow":{"pkts":4,"bytes":3000,"start":"2017-12-18T14:05:50.000100+0100"}}"#,
            r#"{"timestamp":"2017-12-18T14:05:56.021318+0100","event_type":"alert","src_ip":"10.0.0.1","dest_ip":"10.0.0.2"}"#,
            r#"{"timestamp":"2017-12-18T14:05:56.021318+0100","event_type":"flow","src_ip":"10.0.0.1","dest_ip":"10.0.0.9","proto":1,"flow":{"bytes_toserver":84,"bytes_toclient":0,"action":"drop"}}"#,
        ],
    );
    assert_eq!(
        got[0],
        Ok(seed(
            "2017-12-18T13:05:50.000100Z",
            "10.0.0.1",
            "10.0.0.2",
            443,
            "TCP",
            400,
            3000,
            "ALLOW"
        ))
    );
    assert_eq!(
        got[1],
        Ok(seed(
            "2017-12-18T13:05:50.000100Z",
            "10.0.0.2",
            "10.0.0.1",
            4242,
            "TCP",
            3000,
            0,
            "ALLOW"
        ))
    );
    assert_eq!(got[2], Err(Outcome::Skipped(Skip::NotAFlow)));
    assert_eq!(
        got[3],
        Ok(seed(
            "2017-12-18T13:05:56.021318Z",
            "10.0.0.1",
            "10.0.0.9",
            0,
            "ICMP",
            84,
            0,
            "DROP"
        ))
    );
}

#[test]
fn netfilter_lines_in_syslog_and_journald_forms() {
    let got = run(
        Format::Netfilter,
        &[
            "Dec  3 10:00:00 fw kernel: [12345.678901] IPTABLES-DROP: IN=eth0 OUT= MAC=00:11 SRC=203.0.113.5 DST=192.0.2.10 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=1 DF PROTO=TCP SPT=51234 DPT=22 WINDOW=29200 RES=0x00 SYN URGP=0",
            "2026-12-03T10:00:01.250000+01:00 fw kernel: nft accept: IN=eth0 OUT=eth1 SRC=2001:db8::1 DST=2001:db8::2 LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=UDP SPT=5353 DPT=53 LEN=40",
            "Dec 31 23:59:59 fw kernel: block icmp IN=eth0 OUT= SRC=198.51.100.7 DST=192.0.2.10 LEN=84 PROTO=ICMP TYPE=8 CODE=0 ID=7 SEQ=1",
            "Dec  3 10:00:00 fw sshd[42]: Accepted publickey for root",
        ],
    );
    assert_eq!(
        got[0],
        Ok(seed(
            "2026-12-03T10:00:00.000000Z",
            "203.0.113.5",
            "192.0.2.10",
            22,
            "TCP",
            60,
            0,
            "DENY"
        ))
    );
    assert_eq!(
        got[1],
        Ok(seed(
            "2026-12-03T09:00:01.250000Z",
            "2001:db8::1",
            "2001:db8::2",
            53,
            "UDP",
            80,
            0,
            "ALLOW"
        ))
    );
    // No year in BSD syslog: not a day ahead of "now" (2026-12-03), so last year's.
    assert_eq!(
        got[2],
        Ok(seed(
            "2025-12-31T23:59:59.000000Z",
            "198.51.100.7",
            "192.0.2.10",
            0,
            "ICMP",
            84,
            0,
            "DENY"
        ))
    );
    assert!(matches!(&got[3], Err(Outcome::Unparsed(e)) if e.reason.contains("IN=")));
}

#[test]
fn detection_of_each_format_by_its_first_line() {
    for (line, want) in [
        ("#separator \\x09", Some(Format::ZeekConn)),
        (
            r#"{"ts":1.5,"id.orig_h":"1.2.3.4"}"#,
            Some(Format::ZeekConn),
        ),
        (
            r#"{"timestamp":"x","flow_id":1,"event_type":"flow"}"#,
            Some(Format::SuricataEve),
        ),
        (
            r#"{"source_ip":"1.2.3.4","destination_ip":"5.6.7.8"}"#,
            Some(Format::SeedJson),
        ),
        (
            "Dec  3 10:00:00 fw kernel: X IN=eth0 SRC=1.2.3.4 DST=5.6.7.8 PROTO=TCP",
            Some(Format::Netfilter),
        ),
        (
            "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status",
            Some(Format::AwsVpcFlow),
        ),
        (
            "2 123 eni-1 - - - - - - - 1431280876 1431280934 - NODATA",
            Some(Format::AwsVpcFlow),
        ),
        ("hello", None),
        ("{not json", None),
    ] {
        assert_eq!(detect(line.as_bytes()), want, "{line}");
    }
}

#[test]
fn format_names_parse() {
    assert_eq!("nftables".parse(), Ok(Format::Netfilter));
    assert_eq!("zeek-conn".parse(), Ok(Format::ZeekConn));
    assert!("csv".parse::<Format>().is_err());
}

proptest! {
    #[test]
    fn parsers_never_panic_and_records_are_seed_json(
        lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..8),
        which in 0usize..5,
    ) {
        let format = [Format::SeedJson, Format::AwsVpcFlow, Format::ZeekConn, Format::SuricataEve, Format::Netfilter][which];
        let mut parser = Parser::new(format, Options::default());
        let mut out = Vec::new();
        for line in &lines {
            if parser.parse(line, &mut out) == Outcome::Record && format != Format::SeedJson {
                let v: Value = serde_json::from_slice(&out).expect("seed JSON");
                prop_assert!(v.get("source_ip").is_some());
            }
            let _ = detect(line);
        }
    }

    #[test]
    fn plausible_lines_never_panic(
        head in "(2 |version |#fields\t|#separator |\\{\"event_type\":\"flow\",|Dec  3 10:00:00 h kernel: )",
        tail in "[ -~\t]{0,200}",
    ) {
        for format in [Format::AwsVpcFlow, Format::ZeekConn, Format::SuricataEve, Format::Netfilter] {
            let mut parser = Parser::new(format, Options::default());
            let mut out = Vec::new();
            let _ = parser.parse(format!("{head}{tail}").as_bytes(), &mut out);
        }
    }
}

/// Each sample of real lines (`samples/`, provenance in its README) gives exactly the records
/// `samples/expected.py` (an independent reading of the format documentation) lists.
fn check_sample(format: Format, sample: &str, expected: &str) {
    let lines: Vec<&str> = sample.lines().collect();
    let got: Vec<Value> = run(format, &lines)
        .into_iter()
        .filter_map(|r| match r {
            Ok(v) => Some(normalised(v)),
            Err(Outcome::Skipped(_)) => None,
            Err(other) => panic!("{other:?}"),
        })
        .collect();
    let want: Vec<Value> = expected
        .lines()
        .map(|l| normalised(serde_json::from_str(l).expect("expected JSON")))
        .collect();
    assert_eq!(got.len(), want.len(), "record count");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "record {i}");
    }
}

/// Addresses in their canonical text (the reference writes them as the sample does).
fn normalised(mut v: Value) -> Value {
    for field in ["source_ip", "destination_ip"] {
        let ip: std::net::IpAddr = v[field].as_str().expect("ip").parse().expect("ip");
        v[field] = json!(ip.to_string());
    }
    v
}

macro_rules! sample {
    ($format:expr, $file:literal) => {
        check_sample(
            $format,
            include_str!(concat!("../samples/", $file)),
            include_str!(concat!("../samples/", $file, ".expected.jsonl")),
        )
    };
}

#[test]
fn every_sample_gives_the_expected_records() {
    sample!(Format::AwsVpcFlow, "aws-vpc-flow-v2.log");
    sample!(Format::AwsVpcFlow, "aws-vpc-flow-custom.log");
    sample!(Format::ZeekConn, "zeek-conn.log");
    sample!(Format::ZeekConn, "zeek-conn.json");
    sample!(Format::SuricataEve, "suricata-eve.json");
    sample!(Format::Netfilter, "iptables.log");
    sample!(Format::Netfilter, "nftables.log");
}

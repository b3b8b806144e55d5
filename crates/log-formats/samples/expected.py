#!/usr/bin/env python3
"""Independent reference for the sample files: reads each sample as its format's documentation
describes it (not through the Rust parsers) and writes `<sample>.expected.jsonl` (e.g. `zeek-conn.log.expected.jsonl`), one seed
record per record line, in order. The Rust tests compare the parsers' output with these files
field by field. Run it from this directory after changing a sample; review the diff."""

import datetime
import json
import re
import sys

PROTOCOLS = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP", 51: "AH",
             58: "IPv6-ICMP", 132: "SCTP"}


def iso(dt):
    dt = dt.astimezone(datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def epoch(text):
    whole, _, frac = text.partition(".")
    dt = datetime.datetime.fromtimestamp(int(whole), datetime.timezone.utc)
    return iso(dt + datetime.timedelta(microseconds=int((frac + "000000")[:6] or 0)))


def seed(at, src, dst, port, proto, sent, received, action):
    return {"timestamp": at, "source_ip": src, "destination_ip": dst, "port": int(port),
            "protocol": proto, "bytes_sent": int(sent), "bytes_received": int(received),
            "action": action}


def vpc(lines):
    names = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status".split()
    for line in lines:
        fields = line.split()
        if "srcaddr" in fields:
            names = fields
            continue
        r = dict(zip(names, fields))
        if r.get("log-status") in ("NODATA", "SKIPDATA"):
            continue
        proto = int(r["protocol"])
        yield seed(epoch(r["start"]), r["srcaddr"], r["dstaddr"], r["dstport"],
                   PROTOCOLS.get(proto, str(proto)), r["bytes"], 0,
                   {"ACCEPT": "ALLOW", "REJECT": "REJECT"}[r["action"]])


def zeek_action(state):
    return {"REJ": "REJECT", "S0": "DROP", "RSTOS0": "DROP", "SH": "DROP"}.get(state, "ALLOW")


def zeek(lines):
    names = None
    for line in lines:
        if line.startswith("{"):
            r = json.loads(line)
            ts = r["ts"]
            at = epoch(repr(ts)) if isinstance(ts, (int, float)) else iso(
                datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")))
            yield seed(at, r["id.orig_h"], r["id.resp_h"], r["id.resp_p"], r["proto"].upper(),
                       r.get("orig_bytes") or 0, r.get("resp_bytes") or 0,
                       zeek_action(r.get("conn_state", "")))
            continue
        if line.startswith("#fields"):
            names = line.split("\t")[1:]
        if line.startswith("#"):
            continue
        r = dict(zip(names, line.split("\t")))
        num = lambda k: 0 if r[k] == "-" else int(r[k])
        yield seed(epoch(r["ts"]), r["id.orig_h"], r["id.resp_h"], r["id.resp_p"],
                   r["proto"].upper(), num("orig_bytes"), num("resp_bytes"),
                   zeek_action(r["conn_state"]))


def suricata_time(text):
    return iso(datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z"))


def suricata(lines):
    for line in lines:
        r = json.loads(line)
        kind = r.get("event_type")
        if kind not in ("flow", "netflow"):
            continue
        body = r[kind]
        proto = r["proto"]
        if isinstance(proto, str) and proto.isdigit():
            proto = int(proto)
        if isinstance(proto, int):
            proto = PROTOCOLS.get(proto, str(proto))
        sent, received = ((body.get("bytes_toserver", 0), body.get("bytes_toclient", 0))
                          if kind == "flow" else (body.get("bytes", 0), 0))
        action = {"drop": "DROP", "reject": "REJECT"}.get(body.get("action"), "ALLOW")
        yield seed(suricata_time(body.get("start", r["timestamp"])), r["src_ip"], r["dest_ip"],
                   r.get("dest_port", 0), proto, sent, received, action)


NOW = datetime.datetime(2026, 12, 3, 12, 0, 0, tzinfo=datetime.timezone.utc)
DENY = re.compile(r"drop|deny|reject|block", re.I)


def netfilter(lines):
    for line in lines:
        line = re.sub(r"^<\d+>", "", line)
        first = line.split(" ", 1)[0]
        if first[:1].isdigit():
            at = datetime.datetime.fromisoformat(first)
        else:
            month, day, clock = line.split()[:3]
            at = datetime.datetime.strptime(f"{NOW.year} {month} {day} {clock}", "%Y %b %d %H:%M:%S")
            at = at.replace(tzinfo=datetime.timezone.utc)
            if at > NOW + datetime.timedelta(days=1):
                at = at.replace(year=NOW.year - 1)
        head, _, fields = line.partition("IN=")
        prefix = head.split("kernel:", 1)[-1].strip()
        prefix = re.sub(r"^\[[\d. ]*\]", "", prefix).strip()
        kv = {}
        for token in ("IN=" + fields).split():
            k, eq, v = token.partition("=")
            if eq and k not in kv:
                kv[k] = v
        proto = kv["PROTO"]
        if proto.isdigit():
            proto = PROTOCOLS.get(int(proto), proto)
        yield seed(iso(at), kv["SRC"], kv["DST"], kv.get("DPT", 0), proto, kv.get("LEN", 0), 0,
                   "DENY" if DENY.search(prefix) else "ALLOW")


READERS = {"aws-vpc-flow": vpc, "zeek-conn": zeek, "suricata-eve": suricata,
           "iptables": netfilter, "nftables": netfilter}

if __name__ == "__main__":
    for path in sys.argv[1:]:
        reader = next(r for prefix, r in READERS.items() if path.startswith(prefix))
        with open(path, encoding="utf-8") as f:
            lines = [l.rstrip("\n") for l in f if l.strip()]
        with open(path + ".expected.jsonl", "w", encoding="utf-8") as out:
            for record in reader(lines):
                out.write(json.dumps(record) + "\n")

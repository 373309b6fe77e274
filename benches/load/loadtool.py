#!/usr/bin/env python3
"""Helpers for benches/load/run.sh (loopback only, standard library only).

  loadtool.py proxy SIP_PORT UAS_PORT NG_PORT CALLIDS_FILE
      A minimal stateless SIP proxy in front of rtpengine, for the load scenarios (the caller
      sends every request here, the agent only answers): INVITE -> ng `offer` (SDP rewritten to
      rtpengine's ports) -> forwarded to the agent at 127.0.0.1:UAS_PORT with our Via on top;
      ACK and BYE are forwarded the same way; responses come back, our Via is removed, a 2xx
      INVITE SDP goes through ng `answer`, and the response goes to the caller's Via.
      Every Call-ID is appended to CALLIDS_FILE (for `rtpe-delete`). Runs until SIGTERM.

  loadtool.py rtpe-delete NG_PORT CALLIDS_FILE
      ng `query` (RTP packet totals as rtpengine counts them) then `delete` for every call;
      prints one JSON object.

  loadtool.py latency PCAP PORT_LO PORT_HI
      RTP through a relay whose ports are PORT_LO..PORT_HI, captured on lo (tcpdump -w, nanosecond
      time stamps): ingress = datagrams to a relay port, egress = datagrams from a relay port. A
      relayed packet is the same RTP packet (SSRC, sequence, timestamp) leaving the relay; its
      added latency is egress time - ingress time. Prints one JSON object: matched packets, p50,
      p90, p99, p99.9, max (microseconds), ingress packets never seen leaving (`unmatched_in`,
      the last 100 ms of the capture excluded) and packets later than 20 ms (`late_20ms`).

  loadtool.py calls CALLS_JSON EXPECTED
      Summary of `callgate calls list --json` for a load run, as one JSON object: answered,
      recorded ok, packets and loss per direction, setup rate from the call records.
"""
import json
import os
import signal
import socket
import struct
import sys
import time


# ------------------------------------------------------------------ bencode (ng protocol)
def benc(x):
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, list):
        return b"l" + b"".join(benc(i) for i in x) + b"e"
    if isinstance(x, dict):
        return b"d" + b"".join(benc(k) + benc(v) for k, v in sorted(x.items())) + b"e"
    raise TypeError(type(x))


def bdec(b, i=0):
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c == b"l":
        i += 1
        out = []
        while b[i:i + 1] != b"e":
            v, i = bdec(b, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        while b[i:i + 1] != b"e":
            k, i = bdec(b, i)
            v, i = bdec(b, i)
            out[k.decode(errors="replace")] = v
        return out, i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    return b[j + 1:j + 1 + n], j + 1 + n


class Ng:
    def __init__(self, port):
        self.addr = ("127.0.0.1", port)
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.settimeout(5)
        self.n = 0

    def call(self, msg):
        self.n += 1
        cookie = b"%d_%d" % (os.getpid(), self.n)
        self.s.sendto(cookie + b" " + benc(msg), self.addr)
        while True:
            data, _ = self.s.recvfrom(1 << 20)
            ck, _, body = data.partition(b" ")
            if ck == cookie:
                return bdec(body)[0]


# ------------------------------------------------------------------ SIP proxy
def split_msg(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    return lines, body


def header(lines, name, short=None):
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        k = k.strip().lower()
        if k == name.lower() or (short and k == short):
            return v.strip()
    return None


def tag_of(v):
    if not v:
        return ""
    for p in v.split(";")[1:]:
        k, _, val = p.strip().partition("=")
        if k.lower() == "tag":
            return val
    return ""


def rebuild(lines, body):
    out = [ln for ln in lines if ln.split(":", 1)[0].strip().lower() not in ("content-length", "l")]
    out.append("Content-Length: %d" % len(body))
    return ("\r\n".join(out) + "\r\n\r\n").encode() + body


def proxy(sip_port, uas_port, ng_port, ids_file):
    ng = Ng(ng_port)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", sip_port))
    ids = open(ids_file, "a", buffering=1)
    seen = set()
    sent = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    me = "127.0.0.1:%d" % sip_port
    while True:
        data, src = s.recvfrom(65535)
        try:
            lines, body = split_msg(data)
            first = lines[0]
            cid = header(lines, "Call-ID", "i")
            if first.startswith("SIP/2.0 "):
                # Response: drop our Via, answer SDP through rtpengine, send to the next Via.
                vias = [i for i, ln in enumerate(lines) if ln.lower().startswith(("via:", "v:"))]
                if not vias:
                    continue
                i = vias[0]
                values = [v.strip() for v in lines[i].split(":", 1)[1].split(",")]
                if me not in values[0]:
                    continue
                if len(values) > 1:  # "Via: ours, theirs" on one line
                    lines[i] = "Via: " + ", ".join(values[1:])
                    nxt = values[1]
                elif len(vias) > 1:
                    del lines[i]
                    nxt = lines[i].split(":", 1)[1].split(",")[0].strip()
                else:
                    continue
                sent_by = nxt.split()[1].split(";")[0]
                host, _, port = sent_by.partition(":")
                code = int(first.split()[1])
                if 200 <= code < 300 and body.strip() and "INVITE" in (header(lines, "CSeq") or ""):
                    r = ng.call({"command": "answer", "call-id": cid,
                                 "from-tag": tag_of(header(lines, "From", "f")),
                                 "to-tag": tag_of(header(lines, "To", "t")),
                                 "sdp": body, "replace": ["origin", "session-connection"]})
                    if r.get("result") == b"ok":
                        body = r["sdp"]
                s.sendto(rebuild(lines, body), (host, int(port or 5060)))
            else:
                # Requests from the caller (SIPp sends everything to us, ACK and BYE included):
                # INVITE SDP through ng `offer`, then forward to the agent with our Via on top.
                # A retransmission is forwarded byte for byte as before (a second `offer` may
                # change the SDP, and the agent would not see it as a retransmission).
                rkey = (cid, first.split()[0], header(lines, "Via", "v"))
                if rkey in sent:
                    s.sendto(sent[rkey], ("127.0.0.1", uas_port))
                    continue
                if first.startswith("INVITE ") and body.strip():
                    r = ng.call({"command": "offer", "call-id": cid,
                                 "from-tag": tag_of(header(lines, "From", "f")),
                                 "sdp": body, "replace": ["origin", "session-connection"],
                                 "ICE": "remove"})
                    if r.get("result") != b"ok":
                        print("offer failed: %r" % r, file=sys.stderr, flush=True)
                        continue
                    body = r["sdp"]
                    if cid not in seen:
                        seen.add(cid)
                        ids.write(cid + "\n")
                top = [i for i, ln in enumerate(lines) if ln.lower().startswith(("via:", "v:"))][0]
                branch = "z9hG4bK-lp-%x" % (hash(lines[top] + first.split()[0]) & 0xffffffffffff)
                lines.insert(top, "Via: SIP/2.0/UDP %s;branch=%s" % (me, branch))
                method = first.split()[0]
                lines[0] = "%s sip:agent@127.0.0.1:%d SIP/2.0" % (method, uas_port)
                out = rebuild(lines, body)
                if method == "INVITE":
                    sent[rkey] = out
                s.sendto(out, ("127.0.0.1", uas_port))
        except Exception as e:  # one bad message must not stop the proxy
            print("proxy: %s" % e, file=sys.stderr, flush=True)


def rtpe_delete(ng_port, ids_file):
    ng = Ng(ng_port)
    tot = {"calls": 0, "deleted": 0, "rtp_packets": 0, "rtp_errors": 0}
    for cid in open(ids_file).read().split():
        tot["calls"] += 1
        try:
            q = ng.call({"command": "query", "call-id": cid})
            rtp = (q.get("totals") or {}).get("RTP") or {}
            tot["rtp_packets"] += rtp.get("packets", 0)
            tot["rtp_errors"] += rtp.get("errors", 0)
            r = ng.call({"command": "delete", "call-id": cid})
        except socket.timeout:
            continue
        if r.get("result") == b"ok":
            tot["deleted"] += 1
    print(json.dumps(tot))


# ------------------------------------------------------------------ pcap latency
def read_pcap(path):
    with open(path, "rb") as f:
        gh = f.read(24)
        if len(gh) < 24:
            return
        magic = struct.unpack("<I", gh[:4])[0]
        if magic in (0xa1b2c3d4, 0xa1b23c4d):
            e = "<"
        else:
            e = ">"
            magic = struct.unpack(">I", gh[:4])[0]
        div = 1e9 if magic == 0xa1b23c4d else 1e6
        link = struct.unpack(e + "I", gh[20:24])[0]
        off = {1: 14, 113: 16, 276: 20, 0: 4, 12: 0}.get(link, 14)
        rec = struct.Struct(e + "IIII")
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            sec, frac, incl, _ = rec.unpack(h)
            data = f.read(incl)
            yield sec + frac / div, data[off:]


def latency(pcap, lo, hi):
    ingress = {}
    egress = []
    last_t = 0.0
    for t, ip in read_pcap(pcap):
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 15) * 4
        udp = ip[ihl:]
        if len(udp) < 8 + 12:
            continue
        sport, dport = struct.unpack(">HH", udp[:4])
        rtp = udp[8:]
        if rtp[0] >> 6 != 2 or 72 <= (rtp[1] & 0x7f) <= 79:  # not RTP, or RTCP
            continue
        key = rtp[2:12]  # sequence, timestamp, SSRC
        last_t = max(last_t, t)
        if lo <= dport <= hi and not lo <= sport <= hi:
            ingress.setdefault(key, []).append(t)
        elif lo <= sport <= hi and not lo <= dport <= hi:
            egress.append((t, key))
    lat = []
    matched_in = set()
    for t, key in egress:
        ts = ingress.get(key)
        if not ts:
            continue  # our own stream (announcement), or ingress before the capture started
        # The latest ingress copy not after this egress (streams sharing a key are rare).
        best = None
        for x in ts:
            if x <= t and (best is None or x > best):
                best = x
        if best is None:
            continue
        matched_in.add((key, best))
        lat.append(t - best)
    unmatched = 0
    n_in = 0
    for key, ts in ingress.items():
        for x in ts:
            if x > last_t - 0.1:
                continue
            n_in += 1
            if (key, x) not in matched_in:
                unmatched += 1
    lat.sort()

    def pct(p):
        if not lat:
            return None
        return round(lat[min(len(lat) - 1, int(p / 100.0 * len(lat)))] * 1e6, 1)

    print(json.dumps({"matched": len(lat), "ingress": n_in, "unmatched_in": unmatched,
                      "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99),
                      "p999_us": pct(99.9), "max_us": round(lat[-1] * 1e6, 1) if lat else None,
                      "late_20ms": sum(1 for x in lat if x > 0.020)}))


# ------------------------------------------------------------------ call records
def calls(path, expected):
    rows = json.load(open(path))
    ans = [c for c in rows if c.get("answered_at_ms")]
    ok = [c for c in rows if c.get("recording_state") == "ok"]
    starts = sorted(c["started_at_ms"] for c in rows if c.get("started_at_ms"))
    bridged = sorted(c["bridged_at_ms"] for c in rows if c.get("bridged_at_ms"))
    rate = None
    if len(starts) > 1 and starts[-1] > starts[0]:
        rate = round((len(starts) - 1) * 1000.0 / (starts[-1] - starts[0]), 1)
    setup = sorted(c["bridged_at_ms"] - c["started_at_ms"] for c in rows
                   if c.get("bridged_at_ms") and c.get("started_at_ms"))
    out = {
        "rows": len(rows), "expected": expected, "answered": len(ans),
        "bridged": len(bridged), "recording_ok": len(ok),
        "announcement_played": sum(1 for c in rows if c.get("announcement_state") == "played"),
        "caller_packets": sum(c.get("caller_packets") or 0 for c in rows),
        "caller_lost": sum(c.get("caller_lost") or 0 for c in rows),
        "agent_packets": sum(c.get("agent_packets") or 0 for c in rows),
        "agent_lost": sum(c.get("agent_lost") or 0 for c in rows),
        "arrival_cps": rate,
        "invite_to_bridge_ms_p50": setup[len(setup) // 2] if setup else None,
        "invite_to_bridge_ms_max": setup[-1] if setup else None,
        "recording_ids": [c["recording_id"] for c in rows if c.get("recording_id")],
        "causes": {},
    }
    for c in rows:
        k = str(c.get("hangup_cause"))
        out["causes"][k] = out["causes"].get(k, 0) + 1
    print(json.dumps(out))


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    a = sys.argv[2:]
    if cmd == "proxy":
        proxy(int(a[0]), int(a[1]), int(a[2]), a[3])
    elif cmd == "rtpe-delete":
        rtpe_delete(int(a[0]), a[1])
    elif cmd == "latency":
        latency(a[0], int(a[1]), int(a[2]))
    elif cmd == "calls":
        calls(a[0], int(a[1]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

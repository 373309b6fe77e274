#!/usr/bin/env python3
"""RTP helpers for tests/interop/directions.sh (standard library only).

  rtpkit.py gen OUT.pcap --seconds S [--hz F] [--digit D --at T [--digit-ms MS]]
      Writes an Ethernet/IPv4/UDP pcap that SIPp replays with play_pcap_audio: one RTP stream
      (one SSRC, consecutive sequence numbers, 20 ms PCMU packets of an F Hz sine, or silence
      with --hz 0). With --digit, the audio packets from T seconds on are replaced, for MS ms
      (default 200), by an RFC 4733 telephone-event (payload type 101, marker on the first
      packet, one timestamp, growing duration, three end packets), as a real phone sends it;
      the audio resumes afterwards with the timestamp advanced by the event's length.

  rtpkit.py tones CAPTURE.pcap --dst-port P|LO-HI [--src-ip IP] [--window-ms 100] [--hz F ...]
      Reads a tcpdump capture (any of Ethernet, Linux cooked, raw IP or null/loopback link
      types), keeps UDP datagrams to port P that look like RTP with payload type 0 (PCMU),
      decodes them and prints one JSON object: packet counts (all RTP, PCMU, telephone-event),
      and for every requested frequency the first and last time (seconds since the first
      packet of that stream) at which it dominates a window (Goertzel power above 1e6 and 10x
      the other requested frequencies).
"""
import argparse
import json
import math
import struct
import sys

RATE = 8000
PTIME = 20
SAMPLES = RATE * PTIME // 1000


def linear_to_ulaw(x):
    BIAS, CLIP = 0x84, 32635
    sign = 0x80 if x < 0 else 0
    if x < 0:
        x = -x
    x = min(x, CLIP) + BIAS
    exp = 7
    mask = 0x4000
    while exp > 0 and not (x & mask):
        exp -= 1
        mask >>= 1
    mant = (x >> (exp + 3)) & 0x0F
    return ~(sign | (exp << 4) | mant) & 0xFF


def ulaw_to_linear(u):
    u = ~u & 0xFF
    sign, exp, mant = u & 0x80, (u >> 4) & 7, u & 0x0F
    x = ((mant << 3) + 0x84) << exp
    x -= 0x84
    return -x if sign else x


ULAW = [ulaw_to_linear(i) for i in range(256)]

EVENTS = {str(d): d for d in range(10)}
EVENTS.update({"*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15})


def ip_checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(payload, ident):
    src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    udp = struct.pack("!HHHH", 40000, 40002, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", ip_checksum(ip)) + ip[12:]
    eth = b"\x00\x11\x22\x33\x44\x55" + b"\x00\x11\x22\x33\x44\x66" + b"\x08\x00"
    return eth + ip + udp


def gen(a):
    pkts = []  # (time_s, rtp bytes)
    ssrc, seq, ts = 0x1CA11ED, 1000, 160000
    n = int(a.seconds * 1000 / PTIME)
    ev_start = None if a.digit is None else int(round(a.at * 1000 / PTIME))
    ev_len = 0 if a.digit is None else max(3, int(a.digit_ms / PTIME))
    phase = 0
    i = 0
    while i < n:
        t = i * PTIME / 1000.0
        if ev_start is not None and i == ev_start:
            code = EVENTS[a.digit]
            ev_ts = ts
            for k in range(ev_len):
                dur = (k + 1) * SAMPLES
                end = k == ev_len - 1
                body = struct.pack("!BBH", code, (0x80 if end else 0) | 10, dur)
                hdr = struct.pack("!BBHII", 0x80, (0x80 if k == 0 else 0) | 101, seq & 0xFFFF, ev_ts, ssrc)
                pkts.append(((i + k) * PTIME / 1000.0, hdr + body))
                seq += 1
                if end:  # two more end packets (RFC 4733 2.5.1.4), same seq spacing, 0 ms apart
                    for _ in range(2):
                        hdr = struct.pack("!BBHII", 0x80, 101, seq & 0xFFFF, ev_ts, ssrc)
                        pkts.append(((i + k) * PTIME / 1000.0, hdr + body))
                        seq += 1
            i += ev_len
            ts += ev_len * SAMPLES
            phase += ev_len * SAMPLES
            continue
        if a.hz > 0:
            samples = [int(0.5 * 32767 * math.sin(2 * math.pi * a.hz * (phase + j) / RATE)) for j in range(SAMPLES)]
        else:
            samples = [0] * SAMPLES
        phase += SAMPLES
        payload = bytes(linear_to_ulaw(s) for s in samples)
        hdr = struct.pack("!BBHII", 0x80, (0x80 if i == 0 else 0) | 0, seq & 0xFFFF, ts, ssrc)
        pkts.append((t, hdr + payload))
        seq += 1
        ts += SAMPLES
        i += 1
    with open(a.out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        base = 1_700_000_000
        for k, (t, rtp) in enumerate(pkts):
            fr = frame(rtp, k)
            sec = base + int(t)
            usec = int(round((t - int(t)) * 1e6))
            f.write(struct.pack("<IIII", sec, usec, len(fr), len(fr)))
            f.write(fr)
    print(f"rtpkit: wrote {len(pkts)} packets ({a.seconds} s) to {a.out}")
    return 0


def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        e = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        e = ">"
    else:
        raise SystemExit(f"{path}: not a classic pcap file")
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    link = struct.unpack(e + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(e + "IIII", data[off:off + 16])
        off += 16
        pkt = data[off:off + incl]
        off += incl
        t = sec + frac / (1e9 if nano else 1e6)
        if link == 1:        # Ethernet
            if len(pkt) < 14 or pkt[12:14] != b"\x08\x00":
                continue
            ip = pkt[14:]
        elif link == 113:    # Linux cooked (SLL)
            if len(pkt) < 16 or pkt[14:16] != b"\x08\x00":
                continue
            ip = pkt[16:]
        elif link == 276:    # Linux cooked v2
            if len(pkt) < 20 or pkt[0:2] != b"\x08\x00":
                continue
            ip = pkt[20:]
        elif link == 0:      # BSD loopback
            ip = pkt[4:]
        elif link in (12, 101, 228):  # raw IP
            ip = pkt
        else:
            raise SystemExit(f"{path}: unsupported link type {link}")
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        src = ".".join(str(b) for b in ip[12:16])
        udp = ip[ihl:]
        if len(udp) < 8:
            continue
        sport, dport = struct.unpack("!HH", udp[:4])
        yield t, src, sport, dport, udp[8:]


def goertzel(samples, freq):
    k = 2.0 * math.cos(2.0 * math.pi * freq / RATE)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    return s1 * s1 + s2 * s2 - k * s1 * s2


def tones(a):
    freqs = a.hz or [440.0, 660.0, 1000.0]
    rtp_n = pcmu_n = ev_n = 0
    events = set()
    t0 = None
    # Place every PCMU packet at its arrival time (packet clock), one 20 ms slot each.
    slots = {}
    n_before = n_after = 0
    lo_port, _, hi_port = a.dst_port.partition("-")
    lo_port = int(lo_port)
    hi_port = int(hi_port or lo_port)
    for t, src, _sport, dport, p in read_pcap(a.capture):
        if not lo_port <= dport <= hi_port or (a.src_ip and src != a.src_ip):
            continue
        if len(p) < 12 or p[0] >> 6 != 2:
            continue
        rtp_n += 1
        if t0 is None:
            t0 = t
        if a.split is not None:
            if t < a.split:
                n_before += 1
            else:
                n_after += 1
        pt = p[1] & 0x7F
        cc = p[0] & 0x0F
        body = p[12 + 4 * cc:]
        if pt == 101 and len(body) >= 4:
            ev_n += 1
            events.add(body[0])
        if pt != 0:
            continue
        pcmu_n += 1
        slot = int(round((t - t0) * 1000 / PTIME))
        slots[slot] = [ULAW[b] for b in body]
    out = {"rtp_packets": rtp_n, "pcmu_packets": pcmu_n, "event_packets": ev_n,
           "events": sorted(events), "seconds": 0.0, "t0": t0, "tones": {}}
    split_w = {"before": {}, "after": {}}
    if slots:
        last = max(slots)
        out["seconds"] = round((last + 1) * PTIME / 1000, 2)
        per_win = max(1, a.window_ms // PTIME)
        first, lastseen, wins = {}, {}, {}
        for w in range(0, last + 1, per_win):
            win = []
            for s in range(w, w + per_win):
                win.extend(slots.get(s, [0] * SAMPLES))
            e = {f: goertzel(win, f) for f in freqs}
            for f in freqs:
                others = max([e[g] for g in freqs if g != f] + [0.0])
                if e[f] > 1e6 * per_win and e[f] > 10 * others:
                    tw = round(w * PTIME / 1000, 2)
                    first.setdefault(f, tw)
                    lastseen[f] = round(tw + per_win * PTIME / 1000, 2)
                    wins[f] = wins.get(f, 0) + 1
                    if a.split is not None:
                        side = "before" if t0 + (w + per_win) * PTIME / 1000 <= a.split else (
                            "after" if t0 + w * PTIME / 1000 >= a.split else None)
                        if side:
                            split_w[side][str(int(f))] = split_w[side].get(str(int(f)), 0) + 1
        for f in freqs:
            out["tones"][str(int(f))] = {"first_s": first.get(f), "last_s": lastseen.get(f),
                                         "windows": wins.get(f, 0)}
    if a.split is not None:
        for side, n in (("before", n_before), ("after", n_after)):
            out[side] = {"packets": n, "tones": {str(int(f)): split_w[side].get(str(int(f)), 0) for f in freqs}}
    print(json.dumps(out))
    return 0


def invite(a):
    import os
    import socket
    import time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a.src_ip, 0))
    lp = s.getsockname()[1]
    cid = "rtpkit-" + os.urandom(6).hex() + "@" + a.src_ip
    tag = os.urandom(4).hex()
    sdp = (f"v=0\r\no=probe 1 1 IN IP4 {a.src_ip}\r\ns=probe\r\nc=IN IP4 {a.src_ip}\r\nt=0 0\r\n"
           f"m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")

    def req(method, cseq, to_tag="", body=""):
        branch = "z9hG4bK-rtpkit-" + os.urandom(6).hex()
        lines = [f"{method} sip:{a.number}@{a.host}:{a.port} SIP/2.0",
                 f"Via: SIP/2.0/UDP {a.src_ip}:{lp};branch={branch};rport",
                 f"From: <sip:probe@{a.src_ip}:{lp}>;tag={tag}",
                 f"To: <sip:{a.number}@{a.host}:{a.port}>{to_tag}",
                 f"Call-ID: {cid}", f"CSeq: {cseq} {method}",
                 f"Contact: <sip:probe@{a.src_ip}:{lp}>", "Max-Forwards: 70"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines += [f"Content-Length: {len(body)}", "", ""]
        return ("\r\n".join(lines) + body).encode()

    s.sendto(req("INVITE", 1, body=sdp), (a.host, a.port))
    deadline = time.time() + 5
    while time.time() < deadline:
        s.settimeout(max(0.05, deadline - time.time()))
        try:
            data, _ = s.recvfrom(65535)
        except socket.timeout:
            break
        text = data.decode("utf-8", "replace")
        first = text.split("\r\n", 1)[0]
        parts = first.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("SIP/2.0") or not parts[1].isdigit():
            continue
        code = int(parts[1])
        if code < 200:
            continue
        reason = parts[2] if len(parts) > 2 else ""
        to_line = next((l for l in text.split("\r\n") if l.lower().startswith(("to:", "t:"))), "")
        to_tag = ";tag=" + to_line.split(";tag=", 1)[1].split(";")[0] if ";tag=" in to_line else ""
        if code >= 300:
            ack = req("ACK", 1, to_tag)
            s.sendto(ack, (a.host, a.port))
        else:
            s.sendto(req("ACK", 1, to_tag), (a.host, a.port))
            s.sendto(req("BYE", 2, to_tag), (a.host, a.port))
        print(f"{code} {reason}")
        return 0
    print("none")
    return 1


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("out")
    g.add_argument("--seconds", type=float, required=True)
    g.add_argument("--hz", type=float, default=440.0)
    g.add_argument("--digit", choices=sorted(EVENTS))
    g.add_argument("--at", type=float, default=0.0)
    g.add_argument("--digit-ms", type=int, default=200)
    t = sub.add_parser("tones")
    t.add_argument("capture")
    t.add_argument("--dst-port", required=True, help="P or LO-HI")
    t.add_argument("--src-ip")
    t.add_argument("--window-ms", type=int, default=100)
    t.add_argument("--hz", type=float, action="append")
    t.add_argument("--split", type=float)
    v = sub.add_parser("invite")
    v.add_argument("src_ip")
    v.add_argument("host")
    v.add_argument("port", type=int)
    v.add_argument("number")
    a = ap.parse_args()
    return {"gen": gen, "tones": tones, "invite": invite}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())

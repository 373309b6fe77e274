#!/usr/bin/env python3
"""Small SIP-over-UDP probes for run.sh (loopback only).

  sip_probe.py ready HOST PORT TIMEOUT_S      OPTIONS until any SIP response (exit 0) or timeout (1)
  sip_probe.py garbage HOST PORT              send a non-SIP datagram; exit 0 (a reply is not required)
  sip_probe.py missing-headers HOST PORT      INVITE without From/To/Call-ID/CSeq/Max-Forwards;
                                              exit 0 iff a "SIP/2.0 400" reply arrives within 3 s
"""
import os
import socket
import sys
import time


def sock():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def request(method, host, port, local_port, headers):
    branch = "z9hG4bK-probe-" + os.urandom(6).hex()
    lines = [f"{method} sip:probe@{host}:{port} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch={branch};rport"]
    lines += headers
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def recv_until(s, deadline):
    while time.time() < deadline:
        s.settimeout(max(0.05, deadline - time.time()))
        try:
            data, _ = s.recvfrom(65535)
        except socket.timeout:
            return None
        return data
    return None


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = sock()
    lp = s.getsockname()[1]
    if mode == "ready":
        deadline = time.time() + float(sys.argv[4])
        n = 0
        while time.time() < deadline:
            n += 1
            msg = request("OPTIONS", host, port, lp, [
                "From: <sip:probe@127.0.0.1>;tag=probe",
                "To: <sip:probe@127.0.0.1>",
                f"Call-ID: ready-{os.getpid()}-{n}@127.0.0.1",
                f"CSeq: {n} OPTIONS",
                "Max-Forwards: 70"])
            try:
                s.sendto(msg, (host, port))
            except OSError:
                pass
            data = recv_until(s, min(deadline, time.time() + 0.5))
            if data and data.startswith(b"SIP/2.0 "):
                print("ready: " + data.split(b"\r\n", 1)[0].decode(errors="replace"))
                return 0
        print("ready: no SIP response")
        return 1
    if mode == "garbage":
        s.sendto(b"\x00\xff\xfe garbage \x80\x81 not SIP at all\r\n\r\n" + os.urandom(64), (host, port))
        data = recv_until(s, time.time() + 1.0)
        print("garbage: reply " + (data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "none"))
        return 0
    if mode == "missing-headers":
        msg = request("INVITE", host, port, lp, [])
        s.sendto(msg, (host, port))
        data = recv_until(s, time.time() + 3.0)
        first = data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "none"
        print("missing-headers: reply " + first)
        return 0 if first.startswith("SIP/2.0 400") else 1
    print("unknown mode", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

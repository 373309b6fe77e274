#!/usr/bin/env python3
"""Independent decrypter for callgate recordings (docs/recording-format.md). Needs `cryptography`.

  decrypt_recording.py FILE (--dek HEX | --kek HEX --wrapped-dek HEX) [--wav OUT.wav]

Prints one line per record, then `status complete|truncated|damaged ...`; exit 0 only if complete.
"""
import argparse, struct, sys, wave
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from cryptography.exceptions import InvalidTag

def ulaw(b):
    u = ~b & 0xFF; m = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 7)
    return -(m - 0x84) if u & 0x80 else m - 0x84

def alaw(b):
    a = b ^ 0x55; e = (a >> 4) & 7; m = (a & 0x0F) << 4
    m = m + 8 if e == 0 else (m + 0x108) << (e - 1)
    return m if a & 0x80 else -m

def records(pt):
    i = 0
    while i < len(pt):
        typ, n = struct.unpack_from(">BH", pt, i); body = pt[i + 3:i + 3 + n]; i += 3 + n
        if len(body) != n: raise ValueError("record runs past chunk end")
        if typ == 1:
            leg, codec, pos = struct.unpack_from(">BBQ", body); yield ("audio", leg, pos, codec, body[10:])
        elif typ == 2: yield ("gap",) + struct.unpack(">BQQBBH", body)
        elif typ == 3: yield ("end", body[0])
        # other types: skipped (forward compatibility)

def decrypt(data, dek):
    """(header fields, records of the authenticated chunks, status): status is `complete`,
    `truncated` or `damaged chunk N ...`; chunks = how many authenticated."""
    if data[:8] != b"CGREC\0\r\n" or struct.unpack_from(">H", data, 8)[0] != 1:
        return None, [], "damaged header (not a v1 callgate recording)", 0
    hlen = 14 + struct.unpack_from(">I", data, 10)[0]
    header = data[:hlen]; o = 14
    rid = header[o + 1:o + 1 + header[o]].decode(); o += 1 + header[o]
    kid = header[o + 1:o + 1 + header[o]].decode(); o += 1 + header[o]
    created, rate = struct.unpack_from(">qI", header, o); prefix = header[o + 12:o + 19]
    gcm, pos, idx, recs, status = AESGCM(dek), hlen, 0, [], None
    while status is None:
        if pos + 4 > len(data): status = "truncated"; break
        (n,) = struct.unpack_from(">I", data, pos); ct = data[pos + 4:pos + 4 + n]
        if n < 16 or n > 1 << 20: status = f"damaged chunk {idx} bad length"; break
        if len(ct) < n: status = "truncated"; break
        pos += 4 + n; at_end = pos == len(data); pt = last = None
        for flag in (at_end, not at_end):
            try: pt = gcm.decrypt(prefix + struct.pack(">IB", idx, flag), ct, header); last = flag; break
            except InvalidTag: pass
        if pt is None: status = f"damaged chunk {idx} authentication"; break
        if last and not at_end: status = f"damaged chunk {idx} trailing data"; break
        recs += list(records(pt)); idx += 1
        if last: status = "complete"
        elif at_end: status = "truncated"
    return (rid, kid, created, rate), recs, status, idx

def pcm_frames(recs):
    """Interleaved little-endian PCM16 stereo (left caller, right agent), as the gateway renders."""
    frames = max([r[2] + len(r[4]) for r in recs if r[0] == "audio"] + [r[3] for r in recs if r[0] == "gap"] + [0])
    pcm = [[0] * frames, [0] * frames]
    for r in recs:
        if r[0] == "audio":
            dec = ulaw if r[3] == 0 else alaw
            for k, b in enumerate(r[4]): pcm[r[1]][r[2] + k] = dec(b)
    for r in recs:  # pauses are silence even if audio was recorded there
        if r[0] == "gap" and r[4] == 1: pcm[r[1]][r[2]:r[3]] = [0] * (r[3] - r[2])
    return b"".join(struct.pack("<hh", pcm[0][i], pcm[1][i]) for i in range(frames))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file"); ap.add_argument("--dek"); ap.add_argument("--kek")
    ap.add_argument("--wrapped-dek"); ap.add_argument("--wav")
    a = ap.parse_args()
    dek = bytes.fromhex(a.dek) if a.dek else aes_key_unwrap(bytes.fromhex(a.kek), bytes.fromhex(a.wrapped_dek))
    data = open(a.file, "rb").read()
    hdr, recs, status, _ = decrypt(data, dek)
    if hdr is None: sys.exit("not a v1 callgate recording")
    print("header {} {} {} {}".format(*hdr))
    for r in recs:
        print(" ".join(x.hex() if isinstance(x, bytes) else str(x) for x in r))
    print("status", status)
    if a.wav and not status.startswith("damaged"):
        with wave.open(a.wav, "wb") as w:
            w.setnchannels(2); w.setsampwidth(2); w.setframerate(8000)
            w.writeframes(pcm_frames(recs))
    sys.exit(0 if status == "complete" else 1)

if __name__ == "__main__":
    main()

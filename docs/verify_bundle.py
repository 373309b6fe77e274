#!/usr/bin/env python3
"""Independent checker for callgate investigation bundles (docs/export.md), for a third party
without callgate. Needs Python 3 with `cryptography`, and decrypt_recording.py beside this file.

  verify_bundle.py BUNDLE.zip

Prints one line per problem, then `ok: ...` naming the export entry (number and hash; compare
it with the line given at export time) or `NOT INTACT: N problem(s)`. Exit 0 only if intact.
"""
import hashlib, json, os, re, struct, sys, wave, io, zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from decrypt_recording import decrypt, pcm_frames  # noqa: E402

FORMAT = "callgate-export-v1"
GENESIS = "0" * 64
SAFE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def entry_hash(e):
    """callgate-audit-v1 (src/audit/mod.rs): SHA-256 over the fields with length prefixes."""
    def field(s):
        b = s.encode()
        return struct.pack(">I", len(b)) + b
    h = hashlib.sha256(b"callgate-audit-v1\0" + bytes.fromhex(e["prev_hash"]))
    h.update(struct.pack(">qq", e["seq"], e["at_ms"]))
    for f in ("actor", "role", "action", "targets"):
        h.update(field(e[f]))
    h.update(b"\xff\xff\xff\xff" if e["reason"] is None else field(e["reason"]))
    h.update(field(e["details"]))
    return h.hexdigest()


def check(path):
    problems = []
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        return [f"unreadable: not a ZIP file ({err})"], None
    names = {}
    for info in z.infolist():
        if not SAFE.match(info.filename) or len(info.filename) > 200:
            problems.append(f"file name {info.filename!r} is not a plain relative path")
        elif info.filename in names:
            problems.append(f"file {info.filename} appears twice")
        else:
            names[info.filename] = info
    if "manifest.json" not in names or "audit.json" not in names:
        return problems + ["unreadable: manifest.json or audit.json missing"], None
    mbytes = z.read("manifest.json")
    m = json.loads(mbytes)
    ex = json.loads(z.read("audit.json"))
    if m.get("format") != FORMAT or ex.get("format") != FORMAT:
        problems.append(f"format is not {FORMAT}")

    listed = {f["name"]: f for f in m["files"]}
    for n in names:
        if n not in ("manifest.json", "audit.json") and n not in listed:
            problems.append(f"file {n} is not listed in the manifest")
    good = set()
    for n, f in listed.items():
        if n not in names:
            problems.append(f"file {n} is listed in the manifest but missing")
            continue
        data = z.read(n)
        if len(data) != f["bytes"] or hashlib.sha256(data).hexdigest() != f["sha256"]:
            problems.append(f"file {n}: size or SHA-256 differs from the manifest (content changed)")
        else:
            good.add(n)

    for r in m["recordings"]:
        rid = r["recording_id"]
        if r["container"] not in good or r["wav"] not in good:
            continue
        if not HEX64.match(r["data_key"]):
            problems.append(f"recording {rid}: data_key is not 64 hex digits")
            continue
        data = z.read(r["container"])
        if r.get("sha256_at_hangup") and hashlib.sha256(data).hexdigest() != r["sha256_at_hangup"]:
            problems.append(f"recording {rid}: the container is not the file sealed at hangup")
            continue
        hdr, recs, status, chunks = decrypt(data, bytes.fromhex(r["data_key"]))
        if status != r["ending"] or chunks != r["chunks"]:
            problems.append(f"recording {rid}: the container is {status} after {chunks} chunks, "
                            f"the manifest says {r['ending']} after {r['chunks']}")
            continue
        if hdr is None or hdr[0] != rid:
            problems.append(f"recording {rid}: the container's header names another recording")
            continue
        with wave.open(io.BytesIO(z.read(r["wav"]))) as w:
            params = (w.getnchannels(), w.getsampwidth(), w.getframerate())
            frames = w.readframes(w.getnframes())
        if params != (2, 2, 8000) or frames != pcm_frames(recs):
            problems.append(f"recording {rid}: the WAV is not what the container renders to (audio changed)")

    entries = ex.get("entries", [])
    by_seq, last_seq = {}, 0
    for e in entries:
        if e["seq"] <= last_seq:
            problems.append(f"audit entry #{e['seq']}: out of order or repeated")
        last_seq = max(last_seq, e["seq"])
        if e["seq"] == 1 and e["prev_hash"] != GENESIS:
            problems.append("audit entry #1: does not start from the genesis hash")
        if not HEX64.match(e["prev_hash"]) or entry_hash(e) != e["hash"]:
            problems.append(f"audit entry #{e['seq']}: its hash does not match its contents (edited)")
        prev = by_seq.get(e["seq"] - 1)
        if prev is not None and prev["hash"] != e["prev_hash"]:
            problems.append(f"audit entry #{e['seq']}: does not follow the entry before it (chain broken)")
        by_seq[e["seq"]] = e
    if not entries or entries[-1]["action"] != "export.create":
        return problems + ["export entry: the last audit entry is not export.create"], None
    last = entries[-1]
    details = json.loads(last["details"])
    if details.get("manifest_sha256") != hashlib.sha256(mbytes).hexdigest():
        problems.append("export entry: names another manifest: manifest.json was changed after the export")
    if details.get("case") != m["case"]:
        problems.append(f"export entry: is not for case {m['case']}")
    if set(json.loads(last["targets"])) != {m["case"]} | {r["recording_id"] for r in m["recordings"]}:
        problems.append("export entry: its targets are not exactly this case and these recordings")
    if (last["actor"], last["role"]) != (m["exported_by"]["actor"], m["exported_by"]["role"]):
        problems.append("export entry: the manifest names someone else as exporter")
    return problems, (m, last)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    problems, facts = check(path)
    for p in problems:
        print(f"{path}: {p}")
    if problems or facts is None:
        print(f"{path}: NOT INTACT: {len(problems)} problem(s)")
        sys.exit(1)
    m, last = facts
    print(f"{path}: ok: case {m['case']}, {len(m['recordings'])} recording(s) authenticated and "
          f"re-rendered; exported by {last['actor']} ({last['role']}); "
          f"audit entry #{last['seq']} {last['hash']}")


if __name__ == "__main__":
    main()

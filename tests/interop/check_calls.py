#!/usr/bin/env python3
"""Check `callgate calls list --json` output against what the interop run did.

Usage: check_calls.py CALLS.json CALLER_HANGUPS AGENT_HANGUPS BUSY CANCELLED [EXTRA_ANSWERED]

Prints one line per check: "ok   ..." or "FAIL ...", then the recording ids of
answered calls on a line "recording-ids: ID ID ...". Exit status = number of
failed checks (capped at 100).

Expectations beyond the documented field list are stated next to each check.
"""
import json
import sys

ANSWERED_FIELDS = ("answered_at_ms", "bridged_at_ms", "ended_at_ms")

results = []


def check(ok, what):
    results.append((bool(ok), what))
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    return bool(ok)


def present(v):
    return v is not None and v != "" and v != 0


def describe(c):
    keys = ("call_id", "hangup_side", "hangup_cause", "final_status", "answered_at_ms",
            "bridged_at_ms", "ended_at_ms", "caller_packets", "agent_packets",
            "announcement_state", "recording_id", "recording_state", "recording_bytes")
    return "{" + ", ".join(f"{k}={c.get(k)!r}" for k in keys) + "}"


def answered_checks(label, rows):
    for c in rows:
        cid = c.get("call_id")
        problems = []
        for f in ANSWERED_FIELDS:
            if not present(c.get(f)):
                problems.append(f"{f} missing")
        if present(c.get("answered_at_ms")) and present(c.get("ended_at_ms")):
            if c["ended_at_ms"] < c["answered_at_ms"]:
                problems.append("ended_at_ms < answered_at_ms")
        if present(c.get("bridged_at_ms")) and present(c.get("ended_at_ms")):
            if c["ended_at_ms"] < c["bridged_at_ms"]:
                problems.append("ended_at_ms < bridged_at_ms")
        for f in ("caller_packets", "agent_packets"):
            v = c.get(f)
            if not isinstance(v, int) or v <= 0:
                problems.append(f"{f}={v!r} (want > 0)")
        if c.get("announcement_state") != "played":
            problems.append(f"announcement_state={c.get('announcement_state')!r} (want 'played')")
        if c.get("recording_state") != "ok":
            problems.append(f"recording_state={c.get('recording_state')!r} (want 'ok')")
        if not present(c.get("recording_id")):
            problems.append("recording_id missing")
        rb = c.get("recording_bytes")
        if not isinstance(rb, int) or rb <= 0:
            problems.append(f"recording_bytes={rb!r} (want > 0)")
        if present(c.get("final_status")) and c.get("final_status") != 200:
            # Answered calls: final_status, if set at all, can only be 200.
            problems.append(f"final_status={c.get('final_status')!r} on an answered call")
        check(not problems, f"{label} call {cid}: " + ("answered, bridged, relayed both ways, recorded"
                                                      if not problems else "; ".join(problems)))


def unanswered_checks(label, rows, status, cause, side):
    for c in rows:
        cid = c.get("call_id")
        problems = []
        if present(c.get("answered_at_ms")):
            problems.append(f"answered_at_ms={c.get('answered_at_ms')!r} (want none)")
        if present(c.get("bridged_at_ms")):
            problems.append(f"bridged_at_ms={c.get('bridged_at_ms')!r} (want none)")
        if c.get("final_status") != status:
            problems.append(f"final_status={c.get('final_status')!r} (want {status})")
        if c.get("hangup_cause") != cause:
            problems.append(f"hangup_cause={c.get('hangup_cause')!r} (want {cause!r})")
        if c.get("hangup_side") != side:
            problems.append(f"hangup_side={c.get('hangup_side')!r} (want {side!r})")
        # An unanswered call was never recorded: no "ok" recording may exist.
        if c.get("recording_state") == "ok":
            problems.append("recording_state='ok' on an unanswered call")
        check(not problems, f"{label} call {cid}: " + ("not answered, " + f"{status} {cause}"
                                                      if not problems else "; ".join(problems)))


def main():
    path = sys.argv[1]
    n_caller, n_agent, n_busy, n_cancel = (int(x) for x in sys.argv[2:6])
    n_extra = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    try:
        with open(path) as f:
            calls = json.load(f)
    except (OSError, ValueError) as e:
        check(False, f"calls list --json is a JSON document ({e})")
        print("check_calls: 0 passed, 1 failed")
        return 1
    if not check(isinstance(calls, list), "calls list --json is a JSON array"):
        print("check_calls: 0 passed, 1 failed")
        return 1
    calls = [c for c in calls if isinstance(c, dict)]
    expected = n_caller + n_agent + n_busy + n_cancel + n_extra
    check(len(calls) == expected,
          f"exactly {expected} call rows (got {len(calls)})")
    ids = [c.get("call_id") for c in calls]
    check(all(present(i) for i in ids) and len(set(ids)) == len(ids), "call_id present and unique")

    def pick(side, cause):
        return [c for c in calls if c.get("hangup_side") == side and c.get("hangup_cause") == cause]

    by_caller = pick("caller", "normal")
    by_agent = pick("agent", "normal")
    busy = [c for c in calls if c.get("hangup_cause") == "busy" or c.get("final_status") == 486]
    cancelled = [c for c in calls if c.get("hangup_cause") == "cancelled" or c.get("final_status") == 487]

    # Extra answered calls (optional baresip agent) hang up from the caller side.
    check(len(by_caller) == n_caller + n_extra,
          f"{n_caller + n_extra} calls hung up by the caller, cause normal (got {len(by_caller)})")
    check(len(by_agent) == n_agent,
          f"{n_agent} calls hung up by the agent, cause normal (got {len(by_agent)})")
    check(len(busy) == n_busy, f"{n_busy} busy call(s) (got {len(busy)})")
    check(len(cancelled) == n_cancel, f"{n_cancel} cancelled call(s) (got {len(cancelled)})")

    answered_checks("caller-hangup", by_caller)
    answered_checks("agent-hangup", by_agent)
    unanswered_checks("busy", busy, 486, "busy", "agent")
    unanswered_checks("cancel", cancelled, 487, "cancelled", "caller")

    known = {id(c) for c in by_caller + by_agent + busy + cancelled}
    for c in calls:
        if id(c) not in known:
            check(False, f"unexpected call row {describe(c)}")

    rec_ids = [str(c.get("recording_id")) for c in by_caller + by_agent if present(c.get("recording_id"))]
    print("recording-ids: " + " ".join(rec_ids))
    failed = sum(1 for ok, _ in results if not ok)
    print(f"check_calls: {len(results) - failed} passed, {failed} failed")
    return min(failed, 100)


if __name__ == "__main__":
    sys.exit(main())

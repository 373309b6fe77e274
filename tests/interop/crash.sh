#!/usr/bin/env bash
# Crash safety with real peers: SIGKILL the gateway in the middle of a recorded SIPp call.
#
#   CALLGATE_BIN=target/debug/callgate bash tests/interop/crash.sh
#
# Proves: (1) `recording verify` reports the recording as truncated (exit 1), never complete;
# (2) what was sealed before the crash still decrypts, and at most one flush interval (1 s) of
# audio before the kill is lost; (3) on restart the gateway marks the interrupted call
# "truncated" in the call record.
# Ports: gateway 5270 (SIP), 33000-33999 (RTP); SIPp agent 5281, caller 5291, RTP 48000+.
# Last line: "crash: N passed, M failed".
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
scen="$here/scenarios"
BIN="${CALLGATE_BIN:-$root/target/debug/callgate}"
FLUSH_MS=1000
KILL_AFTER_MS=4300   # after the bridge; not a multiple of the flush interval

pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
pids=()
work="$(mktemp -d -t callgate-crash.XXXXXX)"
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if (( fail == 0 )); then rm -rf "$work"; else echo "crash: logs kept in $work"; fi
}
trap cleanup EXIT
cd "$work"

[[ -x $BIN ]] || { echo "no gateway binary at $BIN"; exit 1; }
sox -n -r 8000 -c 1 -b 16 notice.wav synth 1 sine 1000 vol 0.5
sox -n -r 8000 -c 1 -e mu-law -t raw caller.ulaw synth 4 sine 440 vol 0.5
sox -n -r 8000 -c 1 -e mu-law -t raw agent.ulaw synth 4 sine 660 vol 0.5
cat > callgate.toml <<EOF
[sip]
listen = "127.0.0.1:5270"
advertise = "127.0.0.1"
trusted = ["127.0.0.0/8"]
[media]
rtp_ports = "33000-33999"
advertise = "127.0.0.1"
[[route]]
match = "2001"
target = "sip:agent@127.0.0.1:5281"
announcement = "$work/notice.wav"
[recording]
storage = "$work/recordings"
flush = "${FLUSH_MS}ms"
[keys]
kek_file = "$work/kek.key"
[portal]
listen = "127.0.0.1:8270"
[database]
url = "sqlite://$work/callgate.db?mode=rwc"
EOF
cg() { timeout 60 "$BIN" --config "$work/callgate.toml" "$@"; }
call_field() { cg calls list --json | jq -r ".[0].$1 // empty"; }

cg keys init >/dev/null
"$BIN" --config "$work/callgate.toml" serve >gw1.log 2>&1 &
gw=$!; pids+=("$gw")
sleep 1
common=(-i 127.0.0.1 -mi 127.0.0.1 -nostdin -timeout 60s -trace_err)
timeout 90 sipp -sf "$scen/uas_answer.xml" -p 5281 -mp 48000 -m 1 "${common[@]}" >agent.out 2>&1 &
pids+=("$!")
sleep 0.5
timeout 90 sipp -sf "$scen/uac_talk.xml" -s 2001 127.0.0.1:5270 -p 5291 -mp 48100 -m 1 -d 30000 "${common[@]}" >caller.out 2>&1 &
pids+=("$!")

# Wait for the bridge (the call record says "recording").
for _ in $(seq 1 100); do
  [[ "$(call_field recording_state 2>/dev/null)" == recording ]] && break
  sleep 0.1
done
state="$(call_field recording_state)"
[[ $state == recording ]] && ok "call bridged and recording" || { bad "call never reached recording (state '$state')"; exit 1; }
bridged_ms="$(call_field bridged_at_ms)"
rec="$(call_field recording_id)"
now_ms="$(date +%s%3N)"
sleep "$(python3 -c "print(max(0, ($bridged_ms + $KILL_AFTER_MS - $now_ms) / 1000))")"
kill -9 "$gw"
killed_ms="$(date +%s%3N)"
wait "$gw" 2>/dev/null || true
ok "gateway killed with SIGKILL $((killed_ms - bridged_ms)) ms after the bridge"

set +e
out="$(cg recording verify "$rec" 2>&1)"; rc=$?
set -e
if (( rc == 1 )) && [[ $out == *truncated* ]]; then ok "recording verify: exit 1, '$out'"
else bad "recording verify after crash: exit $rc, '$out' (want exit 1, truncated)"; fi

set +e
out="$(cg recording decrypt "$rec" --out crash.wav 2>&1)"; rc=$?
set -e
if (( rc == 0 )) && [[ -f crash.wav ]]; then ok "truncated recording still decrypts what was sealed"
else bad "decrypt after crash: exit $rc, '$out'"; fi
if [[ -f crash.wav ]]; then
  read -r secs left_ok <<<"$(python3 - crash.wav <<'PY'
import sys, wave, struct, math
w = wave.open(sys.argv[1]); n = w.getnframes(); data = w.readframes(n)
s = struct.unpack("<%dh" % (2 * n), data)
left = s[0::2]
# Caller tone (440 Hz) present on the left track in the last sealed second.
tail = left[-8000:] if n >= 8000 else left
def goertzel(x, f):
    k = 2 * math.cos(2 * math.pi * f / 8000); a = b = 0.0
    for v in x: a, b = v + k * a - b, a
    return a * a + b * b - k * a * b
print(f"{n / 8000:.2f}", int(goertzel(tail, 440) > 50 * goertzel(tail, 1000)))
PY
)"
  lived="$(python3 -c "print(($killed_ms - $bridged_ms) / 1000)")"
  lost="$(python3 -c "print(round($lived - $secs, 2))")"
  # At most one flush interval lost, plus scheduling slack (200 ms) and the reorder window.
  if python3 -c "import sys; sys.exit(0 if $lost <= ($FLUSH_MS + 300) / 1000 else 1)"; then
    ok "recorded ${secs}s of ${lived}s before the crash: lost ${lost}s <= one flush interval"
  else bad "recorded ${secs}s of ${lived}s before the crash: lost ${lost}s > one flush interval"; fi
  (( left_ok == 1 )) && ok "the last sealed second holds the caller's audio" || bad "no caller audio in the last sealed second"
fi

# Restart: the interrupted call is marked truncated.
"$BIN" --config "$work/callgate.toml" serve >gw2.log 2>&1 &
gw=$!; pids+=("$gw")
for _ in $(seq 1 50); do
  [[ "$(call_field recording_state 2>/dev/null)" == truncated ]] && break
  sleep 0.1
done
state="$(call_field recording_state)"
[[ $state == truncated ]] && ok "after restart the call record says truncated" || bad "after restart recording_state is '$state'"
kill "$gw"; wait "$gw" 2>/dev/null || true
grep -q "panicked" gw1.log gw2.log && bad "panic in a gateway log" || ok "no panic in the gateway logs"
echo "crash: $pass passed, $fail failed"
(( fail == 0 ))

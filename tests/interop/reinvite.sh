#!/usr/bin/env bash
# re-INVITEs across the bridge with real peers on both legs (SIPp caller and agent):
# hold (a=sendonly must reach the agent, the caller's answer must say recvonly), then a codec
# change to PCMA (offered to the agent, committed on both legs when it accepts).
#
#   CALLGATE_BIN=target/debug/callgate bash tests/interop/reinvite.sh
#
# Ports: gateway 5370 (SIP), 34000-34999 (RTP); SIPp agent 5381, caller 5391, RTP 48200+.
# Last line: "reinvite: N passed, M failed".
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
scen="$here/scenarios"
BIN="${CALLGATE_BIN:-$root/target/debug/callgate}"
FLUSH_MS=1000

pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
pids=()
work="$(mktemp -d -t callgate-reinvite.XXXXXX)"
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if (( fail == 0 )); then rm -rf "$work"; else echo "reinvite: logs kept in $work"; fi
}
trap cleanup EXIT
cd "$work"

[[ -x $BIN ]] || { echo "no gateway binary at $BIN"; exit 1; }
sox -n -r 8000 -c 1 -b 16 notice.wav synth 1 sine 1000 vol 0.5
sox -n -r 8000 -c 1 -e mu-law -t raw caller.ulaw synth 4 sine 440 vol 0.5
sox -n -r 8000 -c 1 -e mu-law -t raw agent.ulaw synth 4 sine 660 vol 0.5
cat > callgate.toml <<EOF
[sip]
listen = "127.0.0.1:5370"
advertise = "127.0.0.1"
trusted = ["127.0.0.0/8"]
[media]
rtp_ports = "34000-34999"
advertise = "127.0.0.1"
[[route]]
match = "2001"
target = "sip:agent@127.0.0.1:5381"
announcement = "$work/notice.wav"
[recording]
storage = "$work/recordings"
flush = "${FLUSH_MS}ms"
[keys]
kek_file = "$work/kek.key"
[portal]
listen = "127.0.0.1:8370"
[database]
url = "sqlite://$work/callgate.db?mode=rwc"
EOF
cg() { timeout 60 "$BIN" --config "$work/callgate.toml" "$@"; }
call_field() { cg calls list --json | jq -r ".[0].$1 // empty"; }

cg keys init >/dev/null
"$BIN" --config "$work/callgate.toml" serve >gw.log 2>&1 &
gw=$!; pids+=("$gw")
sleep 1
common=(-i 127.0.0.1 -mi 127.0.0.1 -nostdin -timeout 60s -timeout_error -trace_err)
timeout 90 sipp -sf "$scen/uas_reinvite.xml" -p 5381 -mp 48200 -m 1 "${common[@]}" >agent.out 2>&1 &
agent=$!; pids+=("$agent")
sleep 0.5
if timeout 90 sipp -sf "$scen/uac_reinvite.xml" -s 2001 127.0.0.1:5370 -p 5391 -mp 48300 -m 1 "${common[@]}" >caller.out 2>&1; then
  ok "caller: hold answered recvonly, PCMA answered with PCMA, BYE"
else bad "caller SIPp failed: $(cat "$work"/*uac_reinvite*errors.log 2>/dev/null | tail -n 3)"; fi
if wait "$agent"; then ok "agent: received the hold (sendonly) and the PCMA offer across the bridge"
else bad "agent SIPp failed: $(cat "$work"/*uas_reinvite*errors.log 2>/dev/null | tail -n 3)"; fi
sleep 0.5
row="$(cg calls list --json | jq -c '.[0]')"
[[ $(jq -r .caller_codec <<<"$row") == PCMA && $(jq -r .agent_codec <<<"$row") == PCMA ]] \
  && ok "call record: codec PCMA on both legs after the change" || bad "codecs after change: $row"
[[ $(jq -r .recording_state <<<"$row") == ok ]] && ok "recording ok" || bad "recording_state: $row"
rec="$(jq -r .recording_id <<<"$row")"
cg recording verify "$rec" >/dev/null && ok "recording verifies" || bad "recording $rec does not verify"
kill "$gw"; wait "$gw" 2>/dev/null || true
grep -q panicked gw.log && bad "panic in the gateway log" || ok "no panic in the gateway log"
echo "reinvite: $pass passed, $fail failed"
(( fail == 0 ))

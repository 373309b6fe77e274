#!/usr/bin/env bash
# Validate the SIPp scenarios against each other, without the gateway:
# each UAS (agent) scenario is driven directly by its UAC (caller) partner.
# Usage: bash tests/interop/selftest.sh   (needs sipp, sox; tcpdump optional)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
S="$here/scenarios"
work="$(mktemp -d -t callgate-selftest.XXXXXX)"
pids=()
cleanup() { local p; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
cd "$work"
timeout 20 sox -n -r 8000 -c 1 -e mu-law -t raw caller.ulaw synth 4 sine 440
timeout 20 sox -n -r 8000 -c 1 -e mu-law -t raw agent.ulaw synth 4 sine 660
common=(-i 127.0.0.1 -mi 127.0.0.1 -nostdin -timeout 60s -timeout_error -trace_err -trace_stat -max_retrans 5)
cap=""
if command -v tcpdump >/dev/null; then
  timeout 120 tcpdump -i lo -n -U -w rtp.pcap 'udp and (portrange 42000-42999 or portrange 43000-43999)' 2>/dev/null &
  cap=$!; pids+=("$cap"); sleep 1
fi
pass=0; fail=0
pair() { # name uas uac port uas_extra uac_extra (extra args: space-separated)
  local name=$1 uas=$2 uac=$3 port=$4 ua=$5 ca=$6 p rc1=0 rc2=0
  # shellcheck disable=SC2086
  timeout 90 sipp -sf "$S/$uas.xml" -p "$port" -mp 42000 -m 1 "${common[@]}" $ua >"$uas.out" 2>&1 &
  p=$!; pids+=("$p"); sleep 0.5
  # shellcheck disable=SC2086
  timeout 90 sipp -sf "$S/$uac.xml" -s 2001 "127.0.0.1:$port" -p 5099 -mp 43000 -m 1 "${common[@]}" $ca >"$uac.out" 2>&1 || rc2=$?
  wait "$p" || rc1=$?
  if [[ $rc1 == 0 && $rc2 == 0 ]]; then pass=$((pass+1)); echo "ok   $name ($uac -> $uas)"
  else fail=$((fail+1)); echo "FAIL $name ($uac rc=$rc2 -> $uas rc=$rc1), logs in $work"; fi
}
pair talk        uas_answer       uac_talk     5081 ""        "-d 3000"
pair agent-bye   uas_hangup       uac_wait_bye 5082 "-d 3000" ""
pair busy        uas_busy         uac_busy     5083 ""        ""
pair cancel      uas_ring_forever uac_cancel   5084 ""        "-d 2000"
if [[ -n $cap ]]; then
  sleep 1; kill "$cap" 2>/dev/null || true; wait "$cap" 2>/dev/null || true
  a2c=$(tcpdump -r rtp.pcap -n 'udp and src portrange 42000-42999' 2>/dev/null | wc -l)
  c2a=$(tcpdump -r rtp.pcap -n 'udp and src portrange 43000-43999' 2>/dev/null | wc -l)
  echo "rtp packets: caller->agent $c2a, agent->caller $a2c"
  if (( a2c > 100 && c2a > 100 )); then pass=$((pass+1)); echo "ok   rtp both ways"; else fail=$((fail+1)); echo "FAIL rtp both ways"; fi
fi
echo "selftest: $pass passed, $fail failed"
(( fail == 0 ))

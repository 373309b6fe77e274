#!/usr/bin/env bash
# The SIPp scenarios of directions.sh against each other, no gateway (~25 s, root for tcpdump
# and SIPp's play_pcap_audio):
#  - dir_uac_talk (127.0.0.3) -> dir_uas_customer (127.0.0.2): the customer logs the
#    request-URI user; RTP both ways.
#  - dir_uac_key_info -> dir_uas_early (a stand-in for the gateway's early-media leg): the INFO
#    is sent inside the early dialog and carries Signal=9; then 200/ACK/BYE.
#  - dir_uac_key_pcap with an rtpkit.py pcap (key "1" at 1.5 s) -> dir_uas_early: the RFC 4733
#    event (payload type 101, event 1) and the 440 Hz audio arrive at the UAS's RTP port.
# Last line: "directions-selftest: N passed, M failed".
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
scen="$here/scenarios"
kit="$here/rtpkit.py"
pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
pids=()
work="$(mktemp -d -t callgate-dirself.XXXXXX)"
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if (( fail == 0 )); then rm -rf "$work"; else echo "directions-selftest: logs kept in $work"; fi
}
trap cleanup EXIT
cd "$work"
for t in sipp sox jq python3 tcpdump; do command -v "$t" >/dev/null || { echo "missing $t"; exit 1; }; done

mkdir -p a b c d e f
sox -n -r 8000 -c 1 -e mu-law -t raw a/talk.ulaw synth 4 sine 660 vol 0.5
sox -n -r 8000 -c 1 -e mu-law -t raw b/talk.ulaw synth 4 sine 440 vol 0.5
cp a/talk.ulaw d/talk.ulaw; cp b/talk.ulaw c/talk.ulaw; cp a/talk.ulaw f/talk.ulaw
python3 "$kit" gen e/talk.pcap --seconds 6 --hz 440 --digit 1 --at 1.5 >/dev/null

timeout 120 tcpdump -i lo -n -U -s 256 -w cap.pcap 'udp and portrange 49500-49599' >tcpdump.log 2>&1 &
pids+=("$!"); cap=$!
sleep 1
common=(-nostdin -timeout 30s -timeout_error -trace_err -trace_msg -trace_logs)
pair() { # NAME UAS_DIR UAS_ARGS... -- UAC_DIR UAC_ARGS...
  local name=$1 ud=$2; shift 2
  local uas=() uac=() rc1=0 rc2=0 pu
  while [[ $1 != -- ]]; do uas+=("$1"); shift; done; shift
  local cd_=$1; shift; uac=("$@")
  (cd "$ud" && exec timeout 40 sipp "${uas[@]}" "${common[@]}" >uas.out 2>&1) & pu=$!; pids+=("$pu")
  sleep 0.5
  (cd "$cd_" && timeout 40 sipp "${uac[@]}" "${common[@]}" >uac.out 2>&1) || rc1=$?
  wait "$pu" || rc2=$?
  if (( rc1 == 0 && rc2 == 0 )); then ok "$name: both SIPp exit 0"
  else bad "$name: UAC exit $rc1, UAS exit $rc2: $(cat "$cd_"/*errors.log "$ud"/*errors.log 2>/dev/null | tail -n 3 | tr '\n' ' ')"; fi
}

pair "talk -> customer" b -sf "$scen/dir_uas_customer.xml" -i 127.0.0.2 -mi 127.0.0.2 -p 5581 -mp 49500 -m 1 -- \
  a -sf "$scen/dir_uac_talk.xml" -s 07700900123 127.0.0.2:5581 -i 127.0.0.3 -mi 127.0.0.3 -p 5591 -mp 49510 -m 1 -d 2000 -key caller 1001
grep -q 'ruri-user=07700900123' b/*_logs.log && ok "customer logged ruri-user=07700900123" || bad "customer log: $(cat b/*_logs.log)"

pair "key by INFO -> early UAS" d -sf "$scen/dir_uas_early.xml" -i 127.0.0.1 -mi 127.0.0.1 -p 5582 -mp 49520 -m 1 -- \
  c -sf "$scen/dir_uac_key_info.xml" -s 2031 127.0.0.1:5582 -i 127.0.0.2 -mi 127.0.0.2 -p 5592 -mp 49530 -m 1 -d 1500 \
  -key caller 07700900301 -key digit 9
grep -q 'info-signal=9' d/*_logs.log && ok "early UAS got INFO Signal=9" || bad "early UAS log: $(cat d/*_logs.log)"
grep -A4 '^INFO ' c/*_messages.log | grep -q '^To:.*;tag=' && ok "INFO sent inside the early dialog (To tag of the 183)" \
  || bad "INFO without the 183's To tag"

pair "key by RFC 4733 pcap -> early UAS" f -sf "$scen/dir_uas_early.xml" -i 127.0.0.1 -mi 127.0.0.1 -p 5583 -mp 49540 -m 1 -- \
  e -sf "$scen/dir_uac_key_pcap.xml" -s 2033 127.0.0.1:5583 -i 127.0.0.2 -mi 127.0.0.2 -p 5593 -mp 49550 -m 1 -d 1000 \
  -key caller 07700900303
sleep 0.5; kill "$cap" 2>/dev/null || true; wait "$cap" 2>/dev/null || true
w="$(python3 "$kit" tones cap.pcap --dst-port 49540 --hz 440 --hz 660)"
echo "at the early UAS: $w"
jq -e '.events == [1] and .event_packets >= 3 and .tones["440"].windows >= 10' <<<"$w" >/dev/null \
  && ok "RFC 4733 event 1 and 440 Hz audio reach the UAS" || bad "pcap replay: $w"
w="$(python3 "$kit" tones cap.pcap --dst-port 49500 --hz 440 --hz 660)"
jq -e '.tones["660"].windows >= 10' <<<"$w" >/dev/null && ok "talk -> customer: 660 Hz reaches the customer" || bad "talk RTP: $w"

echo "directions-selftest: $pass passed, $fail failed"
(( fail == 0 ))

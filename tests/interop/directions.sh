#!/usr/bin/env bash
# Calls in both directions, per-route recording policy and consent choices (issue #6), end to end
# with real SIP peers on loopback. The trunk is 127.0.0.2 (`[sip] trusted`), the agents' phones
# are 127.0.0.3 (`[sip] agents`); the gateway listens on 127.0.0.1.
#
#   CALLGATE_BIN=target/debug/callgate bash tests/interop/directions.sh
#
# Checks:
#  0. routing guards: INVITEs from a network in neither list, from the trunk to an outbound-only
#     number and from the agents to an inbound-only number are refused (403/404).
#  1. outbound: SIPp agent (127.0.0.3) dials 07700900123 -> SIPp customer (127.0.0.2:5181);
#     request-URI user is the dialled number; the customer hears the announcement (1 kHz, RTP
#     capture) before the agent (660 Hz); the agent hears early media before the customer
#     (440 Hz); row direction/customer_leg; recording verifies; left = customer 440 Hz,
#     right = agent 660 Hz.
#  2. record = false: not-recorded, no recording id, no announcement, no new file.
#  3. consent, 9 by SIP INFO after the prompt: declined, no file, still bridged with audio
#     both ways; 3b. 9 by RFC 4733 during the announcement: declined.
#  4. consent, 1 by RFC 4733 after the prompt: recorded, training consent, `tag add training` ok.
#     Keypad protection is on ([pci] auto_pause_on_caller_digits): no consent call has a pause.
#  5. consent, no key: default (recorded, no training consent); `tag add training` refused,
#     naming consent; the choice waited for the timeout.
#  7. record = "on-demand": `callgate call record CALL-ID --token T` mid-call starts it (a second
#     start and a start on the record = false line of check 2 are refused); the call record
#     says when and who (api:crm); the audio holds only what followed.
#  6. baresip (DIRECTIONS_BARESIP=0 skips; runs last): (a) baresip as the agent's phone dials out to a SIPp
#     customer; (b) a SIPp agent dials out to baresip as the customer (auto-answer).
#
# Environment:
#   CALLGATE_BIN         gateway binary; unset = `cargo build --locked` and target/debug/callgate
#                        (under $CARGO_TARGET_DIR when set)
#   DIRECTIONS_SIP_PORT  gateway SIP port on 127.0.0.1, default 5470 (portal 127.0.0.1:8470)
#   DIRECTIONS_BARESIP=0 skip check 6
#   DIRECTIONS_KEEP=1    keep the work directory even when everything passed
#   DIRECTIONS_ONLY      run only these checks, e.g. "0 1 2" (default: all, 0-7); the consent
#                        route is configured only when a consent check (3 4 5) is selected
#
# Needs: sipp (Debian sip-tester 3.6.1), sox, jq, python3, timeout, tcpdump (as root: checks 1 and
# 3 look at the RTP on the wire; SIPp's play_pcap_audio uses a raw socket), baresip for check 6.
# Ports: gateway RTP 36000-36999; SIP: customer 127.0.0.2:5181, agents 127.0.0.3:5182-5186,
# baresip 127.0.0.3:5187 (agent phone) and 127.0.0.2:5189 (customer), SIPp callers 5191-5198;
# SIPp RTP 49000-49199,
# baresip RTP 49200-49399. SIPp never runs with -bg: every peer is a background job of this
# script, its PID kept and killed on exit.
#
# Last line of output: "directions: N passed, M failed"; exit status non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
scen="$here/scenarios"
kit="$here/rtpkit.py"

SIP_PORT="${DIRECTIONS_SIP_PORT:-5470}"
GW="127.0.0.1:$SIP_PORT"
BARESIP="${DIRECTIONS_BARESIP:-1}"
TRUNK=127.0.0.2
AGENTS=127.0.0.3
ANNOUNCE_S=2          # announcement: 2 s of 1 kHz
PROMPT_S=1.5          # consent prompt: 1.5 s of 1.2 kHz
CONSENT_TIMEOUT_S=3   # after the prompt ends
CUSTOMER_HZ=440       # the customer's voice (left track)
AGENT_HZ=660          # the agent's voice (right track)
OUT_NUMBER=07700900123
ONLY="${DIRECTIONS_ONLY:-0 1 2 3 4 5 7 6}"
want() { [[ " $ONLY " == *" $1 "* ]]; }
[[ $BARESIP == 1 ]] || ONLY="${ONLY//6/}"

pass=0
fail=0
failures=()
ok()   { pass=$((pass + 1)); echo "ok   $*"; }
bad()  { fail=$((fail + 1)); failures+=("$*"); echo "FAIL $*"; }
step() { echo; echo "=== $* ==="; }
check() { # check DESCRIPTION CONDITION-COMMAND...: ok when the command succeeds
  local what=$1; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}

pids=()   # every background process this script started (gateway, SIPp, baresip, tcpdump)
work=""
gw_pid=""
finish() {
  local rc=$? p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n $work && -d $work ]]; then
    if (( fail == 0 && rc == 0 )) && [[ ${DIRECTIONS_KEEP:-0} != 1 ]]; then rm -rf "$work"
    else echo "directions: logs kept in $work"; fi
  fi
}
trap finish EXIT
trap 'exit 130' INT TERM

summary_and_exit() {
  echo
  echo "=== summary ==="
  local f
  for f in "${failures[@]}"; do echo "  failed: $f"; done
  echo "directions: $pass passed, $fail failed"
  (( fail == 0 )) && exit 0 || exit 1
}
abort() {
  bad "$*"
  if [[ -n $work && -f $work/callgate.log ]]; then
    echo "--- last 30 lines of callgate.log ---"; tail -n 30 "$work/callgate.log" || true
  fi
  summary_and_exit
}

# ---------------------------------------------------------------- prerequisites
step "prerequisites"
for tool in sipp sox jq python3 timeout tcpdump sha256sum; do
  command -v "$tool" >/dev/null || abort "required tool '$tool' not found (apt-get install sip-tester sox jq python3 tcpdump)"
done
[[ $(id -u) == 0 ]] || abort "must run as root (tcpdump on lo; SIPp play_pcap_audio raw socket)"
if want 6 && ! command -v baresip >/dev/null; then abort "baresip not installed (DIRECTIONS_BARESIP=0 skips check 6)"; fi
if [[ -n ${CALLGATE_BIN:-} ]]; then
  BIN="$CALLGATE_BIN"
else
  echo "building: cargo build --locked"
  (cd "$root" && timeout 2400 cargo build --locked) || abort "cargo build --locked"
  BIN="${CARGO_TARGET_DIR:-$root/target}/debug/callgate"
fi
[[ -x $BIN ]] || abort "gateway binary $BIN missing or not executable"
ok "tools and gateway binary $BIN"

work="$(mktemp -d -t callgate-directions.XXXXXX)"
echo "work dir: $work"
cd "$work"
mkdir -p recordings

# ---------------------------------------------------------------- media and config
step "media and config"
sox -n -r 8000 -c 1 -b 16 notice.wav synth "$ANNOUNCE_S" sine 1000 vol 0.5 fade 0.05 "$ANNOUNCE_S" 0.05
sox -n -r 8000 -c 1 -b 16 consent.wav synth "$PROMPT_S" sine 1200 vol 0.5 fade 0.05 "$PROMPT_S" 0.05
sox -n -r 8000 -c 1 -e mu-law -t raw customer.ulaw synth 4 sine "$CUSTOMER_HZ" vol 0.5
sox -n -r 8000 -c 1 -e mu-law -t raw agent.ulaw synth 4 sine "$AGENT_HZ" vol 0.5
# RFC 4733 callers (SIPp play_pcap_audio from the 183 on): 16 s of the customer's tone with
#  - key1.pcap: a "1" 5.0 s after the 183 (after announcement + prompt = 3.5 s, inside the 3 s window)
#  - key9early.pcap: a "9" 1.0 s after the 183 (during the announcement)
#  - nokey.pcap: no key
python3 "$kit" gen key1.pcap --seconds 16 --hz "$CUSTOMER_HZ" --digit 1 --at 5.0 >/dev/null
python3 "$kit" gen key9early.pcap --seconds 16 --hz "$CUSTOMER_HZ" --digit 9 --at 1.0 >/dev/null
python3 "$kit" gen nokey.pcap --seconds 16 --hz "$CUSTOMER_HZ" >/dev/null
prompt_sha="$(sha256sum consent.wav | cut -d' ' -f1)"

CFG="$work/callgate.toml"
cat >"$CFG" <<EOF
# generated by tests/interop/directions.sh
[sip]
listen = "$GW"
advertise = "127.0.0.1"
trusted = ["$TRUNK/32"]
agents = ["$AGENTS/32"]

[media]
rtp_ports = "36000-36999"
advertise = "127.0.0.1"

# outbound to baresip as the customer (check 6b); before 07* (first match wins)
[[route]]
match = "0780*"
direction = "outbound"
target = "sip:$TRUNK:5189"
announcement = "$work/notice.wav"

[[route]]
match = "07*"
direction = "outbound"
target = "sip:$TRUNK:5181"
announcement = "$work/notice.wav"

[[route]]
match = "2002"
target = "sip:agent@$AGENTS:5182"
record = false

[[route]]
match = "2007"
target = "sip:agent@$AGENTS:5188"
announcement = "$work/notice.wav"
record = "on-demand"

$(want 3 || want 4 || want 5 && for n in 1 2 3 4; do cat <<ROUTE
# consent line; one route (and one SIPp agent port) per consent call, so that a call left
# hanging by a failed check cannot reach the next check's agent
[[route]]
match = "203$n"
target = "sip:agent@$AGENTS:$((5182 + n))"
announcement = "$work/notice.wav"
[route.consent]
prompt = "$work/consent.wav"
decline_digit = "9"
training_digit = "1"
timeout = "${CONSENT_TIMEOUT_S}s"

ROUTE
done)

[recording]
storage = "$work/recordings"
flush = "1s"

[keys]
kek_file = "$work/kek.key"

[portal]
listen = "127.0.0.1:8470"
api_tokens_file = "$work/api-tokens"

[database]
url = "sqlite://$work/callgate.db?mode=rwc"

# Keypad protection on: a consent key must be taken as a choice, never start a PCI pause.
[pci]
auto_pause_on_caller_digits = true
EOF
ok "media and config $CFG"

cg() { timeout "${CG_TIMEOUT:-60}" "$BIN" --config "$CFG" "$@"; }
cg keys init >keys-init.log 2>&1 || abort "callgate keys init: $(tail -n 1 keys-init.log)"
TOKEN="$(cg api token create crm 2>token.err | grep -o 'cgt_[0-9a-f]*' | head -n 1 || true)"
[[ -n $TOKEN ]] || abort "callgate api token create crm: $(tail -n 1 token.err)"

# ---------------------------------------------------------------- gateway and capture
step "start gateway and RTP capture"
RUST_LOG="${RUST_LOG:-info}" "$BIN" --config "$CFG" serve >callgate.log 2>&1 &
gw_pid=$!
pids+=("$gw_pid")
ready=0
for _ in $(seq 1 30); do
  if ! kill -0 "$gw_pid" 2>/dev/null; then
    rc=0; wait "$gw_pid" || rc=$?
    abort "gateway exited at start (exit $rc): $(tail -n 3 callgate.log)"
  fi
  if timeout 5 python3 "$here/sip_probe.py" ready 127.0.0.1 "$SIP_PORT" 1 >probe.log 2>&1; then ready=1; break; fi
done
(( ready )) || abort "gateway not answering SIP OPTIONS on $GW within 30 s"
ok "gateway answers SIP on $GW (pid $gw_pid)"

timeout 900 tcpdump -i lo -n -U -s 256 -w rtp.pcap 'udp and portrange 36000-36999' >tcpdump.log 2>&1 &
cap_pid=$!
pids+=("$cap_pid")
sleep 1
kill -0 "$cap_pid" 2>/dev/null || abort "tcpdump did not start: $(tail -n 2 tcpdump.log)"

# ---------------------------------------------------------------- helpers
sipp_common=(-nostdin -timeout_error -max_retrans 5 -trace_err -trace_msg -trace_logs -max_log_size 2000000)
# peer NAME DIR TIMEOUT_S sipp-args...: SIPp in DIR (its rtp_stream / pcap files are relative to
# it) in the background; PID in $peer_pid. Output in DIR/NAME.out.
peer() {
  local name=$1 dir=$2 to=$3; shift 3
  mkdir -p "$dir"
  (cd "$dir" && exec timeout "$to" sipp "$@" "${sipp_common[@]}" >"$name.out" 2>&1) &
  peer_pid=$!
  pids+=("$peer_pid")
}
# peer_dir NAME SOUND: a directory for one SIPp whose talk.ulaw / talk.pcap is SOUND
peer_dir() {
  local d="$work/peers/$1"
  mkdir -p "$d"
  case $2 in
    *.pcap) ln -sf "$work/$2" "$d/talk.pcap" ;;
    *)      ln -sf "$work/$2" "$d/talk.ulaw"; ln -sf "$work/$2" "$d/agent.ulaw" ;;
  esac
  echo "$d"
}
# sipp_verdict NAME PID DIR DEADLINE_S: waits (up to DEADLINE_S) and counts SIPp's exit
sipp_verdict() {
  local name=$1 p=$2 dir=$3 dl=$(( $(date +%s) + $4 )) rc=0
  while kill -0 "$p" 2>/dev/null && (( $(date +%s) < dl )); do sleep 0.3; done
  if kill -0 "$p" 2>/dev/null; then
    kill "$p" 2>/dev/null || true
    bad "$name: SIPp still running after ${4}s; see $dir"
    return 1
  fi
  wait "$p" || rc=$?
  if (( rc == 0 )); then ok "$name: SIPp call completed (exit 0)"; return 0; fi
  bad "$name: SIPp exit $rc: $(cat "$dir"/*_errors.log 2>/dev/null | grep -v '^$' | tail -n 2 | tr '\n' ' ')"
  return 1
}
calls_json() { cg calls list --json >calls.json 2>calls-list.err || { echo "[]" >calls.json; return 1; }; }
# row SELECTOR(jq boolean on a call): waits up to 15 s for the call to have ended and its
# recording to be settled; prints the row (compact JSON) or nothing.
row() {
  local sel=$1 r=""
  for _ in $(seq 1 30); do
    calls_json || true
    r="$(jq -c "[.[] | select($sel)] | first // empty" calls.json 2>/dev/null || true)"
    if [[ -n $r ]] && jq -e '.ended_at_ms != null and .recording_state != "recording"' <<<"$r" >/dev/null; then
      echo "$r"; return 0
    fi
    sleep 0.5
  done
  echo "$r"
}
# live_bridged SELECTOR: waits up to 20 s for the (still running) call to be bridged; prints its
# call_id or nothing
live_bridged() {
  local id=""
  for _ in $(seq 1 40); do
    calls_json || true
    id="$(jq -r "[.[] | select($1) | select(.bridged_at_ms != null)] | first | .call_id // empty" calls.json 2>/dev/null || true)"
    [[ -n $id ]] && { echo "$id"; return 0; }
    sleep 0.5
  done
}
by_cid() { echo "(.sip_call_id // \"\" | startswith(\"$1@\"))"; }
# field-level assertion: jqcheck NAME ROW EXPR DESCRIPTION
jqcheck() {
  local name=$1 r=$2 expr=$3 what=$4 got
  if [[ -n $r ]] && jq -e "$expr" <<<"$r" >/dev/null 2>&1; then ok "$name: $what"
  elif [[ $r == *'"rtp_packets"'* ]]; then
    bad "$name: $what; on the wire: $r"
  else
    got="$(jq -c '{direction, customer_leg, record_policy, recording_state, recording_id, announcement_state,
                   consent_state, consent_recording, consent_training, consent_source, consent_at_ms,
                   consent_prompt_sha256, answered_at_ms, bridged_at_ms, announcement_started_at_ms,
                   announcement_ended_at_ms, caller_packets, agent_packets, hangup_cause, pauses}' <<<"${r:-null}" 2>/dev/null || echo "$r")"
    bad "$name: $what; row: ${got:-none}"
  fi
}
rec_files() { find "$work/recordings" -type f | wc -l; }
# recording_ok NAME REC_ID: verify + decrypt, left = customer, right = agent
recording_ok() {
  local name=$1 id=$2 rc=0
  if [[ -z $id || $id == null ]]; then bad "$name: no recording id"; return; fi
  cg recording verify "$id" >"verify-$name.log" 2>&1 || rc=$?
  if (( rc == 0 )); then ok "$name: recording verify $id"; else bad "$name: recording verify $id: exit $rc: $(tail -n 1 "verify-$name.log")"; fi
  rc=0; cg recording decrypt "$id" --out "$name.wav" >"decrypt-$name.log" 2>&1 || rc=$?
  if (( rc != 0 )); then bad "$name: recording decrypt $id: exit $rc: $(tail -n 1 "decrypt-$name.log")"; return; fi
  if timeout 60 python3 "$here/wav_tones.py" "$name.wav" "$CUSTOMER_HZ" "$AGENT_HZ" >"tones-$name.log" 2>&1; then
    ok "$name: recording left = customer ${CUSTOMER_HZ} Hz, right = agent ${AGENT_HZ} Hz"
  else
    bad "$name: recording tracks: $(tr '\n' ' ' <"tones-$name.log")"
  fi
}
# wire DST_IP DST_PORT [SPLIT_MS]: tone timeline of the gateway's RTP to one peer port (rtpkit
# tones JSON); with SPLIT_MS (a call record time), also counts before/after that instant
wire() {
  local split=()
  [[ -n ${3:-} && ${3:-} != null ]] && split=(--split "$(python3 -c "print($3 / 1000)")")
  timeout 60 python3 "$kit" tones rtp.pcap.snap --dst-port "$2" --hz "$CUSTOMER_HZ" --hz "$AGENT_HZ" --hz 1000 --hz 1200 \
    "${split[@]}" 2>>rtpkit.err | jq -c --arg ip "$1" '. + {dst: $ip}' || echo '{"rtp_packets":-1,"error":"rtpkit tones failed, see rtpkit.err"}'
}
snap() { cp rtp.pcap rtp.pcap.snap; }   # tcpdump -U writes whole packets; a copy is readable

if want 0; then
# ---------------------------------------------------------------- 0. routing guards
step "0. routing guards (no media)"
for probe in "127.0.0.4 2031 403 neither-trusted-nor-agents" "$TRUNK $OUT_NUMBER 40[34] trunk-to-outbound-number" \
             "$AGENTS 2002 40[34] agents-to-inbound-number"; do
  read -r src num want what <<<"$probe"
  got="$(timeout 10 python3 "$kit" invite "$src" 127.0.0.1 "$SIP_PORT" "$num" 2>&1 || true)"
  if [[ $got =~ ^$want ]]; then ok "0. $what: INVITE $num from $src refused: $got"
  else bad "0. $what: INVITE $num from $src: got '$got', want $want"; fi
done
fi

if want 1; then
# ---------------------------------------------------------------- 1. outbound
step "1. outbound: SIPp agent ($AGENTS) dials $OUT_NUMBER -> SIPp customer ($TRUNK:5181)"
d_cust="$(peer_dir out-customer customer.ulaw)"
d_agent="$(peer_dir out-agent agent.ulaw)"
peer out-customer "$d_cust" 90 -sf "$scen/dir_uas_customer.xml" -i "$TRUNK" -mi "$TRUNK" -p 5181 -mp 49010 -m 1 -timeout 80s
p_cust=$peer_pid
sleep 0.5
peer out-agent "$d_agent" 90 -sf "$scen/dir_uac_talk.xml" -s "$OUT_NUMBER" "$GW" -i "$AGENTS" -mi "$AGENTS" -p 5191 -mp 49020 \
  -m 1 -d 5000 -key caller 1001 -cid_str "dir-out-%u@%s" -timeout 60s
p_agent=$peer_pid
sipp_verdict "1. agent (caller)" "$p_agent" "$d_agent" 70 || true
sipp_verdict "1. customer (called)" "$p_cust" "$d_cust" 20 || true
ruser="$(sed -n 's/.*ruri-user=\([^ ]*\).*/\1/p' "$d_cust"/*_logs.log 2>/dev/null | head -n 1 || true)"
[[ $ruser == "$OUT_NUMBER" ]] && ok "1. customer's INVITE request-URI user is the dialled $OUT_NUMBER" \
  || bad "1. customer's INVITE request-URI user '${ruser}' (want $OUT_NUMBER): $(grep -m1 '^INVITE' "$d_cust"/*_messages.log 2>/dev/null)"
r="$(row "$(by_cid dir-out-1)")"
echo "row: $r"
jqcheck "1" "$r" '.direction == "outbound" and .customer_leg == "called"' "direction outbound, customer_leg called"
jqcheck "1" "$r" '.recording_state == "ok" and (.recording_id | type) == "string"' "recording_state ok"
jqcheck "1" "$r" '.announcement_state == "played" and .bridged_at_ms != null and .announcement_ended_at_ms != null
                   and .bridged_at_ms >= .announcement_ended_at_ms - 20' "announcement played, bridged after it ended"
jqcheck "1" "$r" '.hangup_cause == "normal" and .caller_packets > 0 and .agent_packets > 0' "normal hangup, packets both ways"
recording_ok "1.outbound" "$(jq -r '.recording_id // empty' <<<"${r:-null}")"
snap
bridged="$(jq -r '.bridged_at_ms // empty' <<<"${r:-null}")"
w_cust="$(wire "$TRUNK" 49010 "$bridged")"; w_agent="$(wire "$AGENTS" 49020 "$bridged")"
echo "wire to customer: $w_cust"; echo "wire to agent:    $w_agent"
# Before the bridge the customer hears >= 1.5 s of the 1 kHz announcement and nothing of the
# agent; after it, the agent (660 Hz).
jqcheck "1" "$w_cust" '.before.tones["1000"] >= 15 and .before.tones["660"] == 0 and .after.tones["660"] >= 20' \
  "customer hears the announcement (1 kHz) before the bridge, the agent (660 Hz) only after"
# Before the bridge the agent gets early media (>= 1 s of packets: the wait tone, 440 Hz pips)
# and nothing of the customer's voice would be distinguishable; after it, the customer's
# continuous 440 Hz.
jqcheck "1" "$w_agent" '.before.packets >= 50 and .after.tones["440"] >= 20' \
  "agent gets early media (>= 1 s) before the bridge, the customer (440 Hz) after"
grep -q '^SIP/2.0 183' "$d_agent"/*_messages.log 2>/dev/null && ok "1. agent received 183 (early media)" \
  || bad "1. agent received no 183"
fi

if want 2; then
# ---------------------------------------------------------------- 2. record = false
step "2. record = false (2002)"
n_before=$(rec_files)
d_ag="$(peer_dir nr-agent agent.ulaw)"; d_ca="$(peer_dir nr-caller customer.ulaw)"
peer nr-agent "$d_ag" 60 -sf "$scen/uas_answer.xml" -i "$AGENTS" -mi "$AGENTS" -p 5182 -mp 49030 -m 1 -timeout 50s
p_ag=$peer_pid; sleep 0.5
peer nr-caller "$d_ca" 60 -sf "$scen/dir_uac_talk.xml" -s 2002 "$GW" -i "$TRUNK" -mi "$TRUNK" -p 5192 -mp 49040 \
  -m 1 -d 4000 -key caller 07700900202 -cid_str "dir-norec-%u@%s" -timeout 50s
p_ca=$peer_pid
id="$(live_bridged "$(by_cid dir-norec-1)")"
if [[ -z $id ]]; then bad "2. call not bridged within 20 s (cannot try an on-demand start)"
else
  rc=0; cg call record "$id" --token "$TOKEN" >od-norec.out 2>&1 || rc=$?
  (( rc != 0 )) && ok "2. call record $id on a record = false line refused (exit $rc): $(tail -n 1 od-norec.out)" \
    || bad "2. call record $id on a record = false line: exit 0 (want refused)"
fi
sipp_verdict "2. caller" "$p_ca" "$d_ca" 60 || true
sipp_verdict "2. agent" "$p_ag" "$d_ag" 20 || true
r="$(row "$(by_cid dir-norec-1)")"
echo "row: $r"
jqcheck "2" "$r" '.recording_state == "not-recorded" and .recording_id == null and .record_policy == "never"' \
  "recording_state not-recorded, no recording id, record_policy never"
jqcheck "2" "$r" '.announcement_state == "none" and .direction == "inbound" and .customer_leg == "caller"' \
  "no announcement; inbound, customer_leg caller"
jqcheck "2" "$r" '.bridged_at_ms != null and .caller_packets > 0 and .agent_packets > 0' "bridged, packets both ways"
n_after=$(rec_files)
(( n_after == n_before )) && ok "2. no new file in the recordings dir ($n_after)" || bad "2. recordings dir: $n_before -> $n_after files"
fi

# ---------------------------------------------------------------- 3-5. consent
# consent_call NAME N SCENARIO SOUND MP_AGENT MP_CALLER SIP_PORT_CALLER extra-args...
#   dials 203N (consent route N, agent on 127.0.0.3:5182+N)
consent_call() {
  local name=$1 n=$2 sc=$3 sound=$4 mpa=$5 mpc=$6 pc=$7; shift 7
  local da dc pa pcl
  da="$(peer_dir "$name-agent" agent.ulaw)"; dc="$(peer_dir "$name-caller" "$sound")"
  peer "$name-agent" "$da" 60 -sf "$scen/uas_answer.xml" -i "$AGENTS" -mi "$AGENTS" -p $((5182 + n)) -mp "$mpa" -m 1 -timeout 50s
  pa=$peer_pid; sleep 0.5
  peer "$name-caller" "$dc" 60 -sf "$scen/$sc.xml" -s "203$n" "$GW" -i "$TRUNK" -mi "$TRUNK" -p "$pc" -mp "$mpc" \
    -m 1 -cid_str "dir-$name-%u@%s" -timeout 50s "$@"
  pcl=$peer_pid
  sipp_verdict "$name caller" "$pcl" "$dc" 60 || true
  sipp_verdict "$name agent" "$pa" "$da" 20 || true
}
consent_common() { # NAME ROW
  jqcheck "$1" "$2" ".consent_state == \"decided\" and .consent_prompt_sha256 == \"$prompt_sha\"" \
    "consent decided; consent_prompt_sha256 = SHA-256 of consent.wav"
  jqcheck "$1" "$2" '(.pauses // []) == []' "no PCI pause (consent keys are not card digits; [pci] auto_pause_on_caller_digits is on)"
}

if want 3; then
step "3. consent: caller presses 9 by SIP INFO after the prompt"
n_before=$(rec_files)
# 183 -> 5 s (announcement 2 s + prompt 1.5 s + 1.5 s) -> INFO Signal=9
consent_call c9info 1 dir_uac_key_info customer.ulaw 49050 49060 5193 -d 5000 -key caller 07700900301 -key digit 9
r="$(row "$(by_cid dir-c9info-1)")"
echo "row: $r"
consent_common "3" "$r"
jqcheck "3" "$r" '.consent_recording == false and .consent_source == "keypad"' "consent_recording false, source keypad"
jqcheck "3" "$r" '.recording_state == "declined" and .recording_id == null' "recording_state declined, no recording id"
jqcheck "3" "$r" '.consent_at_ms != null and .announcement_ended_at_ms != null and .consent_at_ms >= .announcement_ended_at_ms' \
  "choice recorded after the announcement ended"
jqcheck "3" "$r" '.bridged_at_ms != null and .hangup_cause == "normal" and .caller_packets > 0 and .agent_packets > 0' \
  "still bridged, packets both ways"
snap
w="$(wire "$AGENTS" 49050)"; echo "wire to agent: $w"
jqcheck "3" "$w" '.tones["440"].windows >= 10' "agent hears the caller (440 Hz on the wire)"
w="$(wire "$TRUNK" 49060)"; echo "wire to caller: $w"
jqcheck "3" "$w" '.tones["1000"].windows >= 10 and .tones["1200"].windows >= 5 and .tones["660"].windows >= 10
                  and .tones["1200"].first_s >= .tones["1000"].first_s' \
  "caller hears announcement (1 kHz), then prompt (1.2 kHz), then the agent (660 Hz)"
n_after=$(rec_files)
(( n_after == n_before )) && ok "3. no new file in the recordings dir" || bad "3. recordings dir: $n_before -> $n_after files"

step "3b. consent: caller presses 9 by RFC 4733 during the announcement"
n_before=$(rec_files)
consent_call c9early 2 dir_uac_key_pcap key9early.pcap 49070 49080 5194 -d 3000 -key caller 07700900302
r="$(row "$(by_cid dir-c9early-1)")"
echo "row: $r"
consent_common "3b" "$r"
jqcheck "3b" "$r" '.consent_recording == false and .consent_source == "keypad" and .recording_state == "declined"
                    and .recording_id == null' "key during the announcement counts: declined, keypad, no recording"
jqcheck "3b" "$r" '.bridged_at_ms != null and .caller_packets > 0 and .agent_packets > 0' "still bridged, packets both ways"
snap
w="$(wire "$TRUNK" 49080)"; echo "wire to caller: $w"
jqcheck "3b" "$w" '.tones["1000"].windows >= 15 and .tones["1200"].windows == 0 and .tones["660"].windows >= 10' \
  "caller hears the whole announcement, no prompt (a key during the announcement skips it), then the agent"
n_after=$(rec_files)
(( n_after == n_before )) && ok "3b. no new file in the recordings dir" || bad "3b. recordings dir: $n_before -> $n_after files"
fi

if want 4; then
step "4. consent: caller presses 1 by RFC 4733 after the prompt"
consent_call c1 3 dir_uac_key_pcap key1.pcap 49090 49100 5195 -d 4000 -key caller 07700900303
r="$(row "$(by_cid dir-c1-1)")"
echo "row: $r"
consent_common "4" "$r"
jqcheck "4" "$r" '.consent_training == true and .consent_recording == true and .consent_source == "keypad"' \
  "consent_training true, consent_recording true, source keypad"
jqcheck "4" "$r" '.recording_state == "ok"' "recording_state ok"
rec="$(jq -r '.recording_id // empty' <<<"${r:-null}")"
recording_ok "4.key1" "$rec"
if [[ -n $rec ]]; then
  rc=0; cg --role supervisor tag add "$rec" training >tag-c1.out 2>tag-c1.err || rc=$?
  (( rc == 0 )) && ok "4. tag add $rec training: exit 0" || bad "4. tag add $rec training: exit $rc: $(tail -n 2 tag-c1.err)"
fi
fi

if want 5; then
step "5. consent: no key (route defaults)"
consent_call c0 4 dir_uac_key_pcap nokey.pcap 49110 49120 5196 -d 3000 -key caller 07700900304
r="$(row "$(by_cid dir-c0-1)")"
echo "row: $r"
consent_common "5" "$r"
jqcheck "5" "$r" '.consent_source == "default" and .consent_recording == true and .consent_training == false' \
  "consent_source default, recording yes, training no"
jqcheck "5" "$r" '.recording_state == "ok"' "recording_state ok"
# The default applies only after announcement + prompt + timeout (6.5 s); 0.5 s slack.
jqcheck "5" "$r" ".consent_at_ms != null and .announcement_started_at_ms != null
                  and .consent_at_ms - .announcement_started_at_ms >= 6000" "default taken only after the timeout"
rec="$(jq -r '.recording_id // empty' <<<"${r:-null}")"
recording_ok "5.nokey" "$rec"
if [[ -n $rec ]]; then
  rc=0; cg --role supervisor tag add "$rec" training >tag-c0.out 2>tag-c0.err || rc=$?
  if (( rc != 0 )) && grep -qi consent tag-c0.err && ! grep -qi "may not tag" tag-c0.err; then ok "5. tag add $rec training refused (exit $rc): $(head -n 1 tag-c0.err)"
  else bad "5. tag add $rec training: exit $rc, stderr '$(head -n 2 tag-c0.err | tr '\n' ' ')' (want non-zero, naming consent)"; fi
fi
fi

# ---------------------------------------------------------------- 7. on-demand
if want 7; then
step "7. record = \"on-demand\" (2007): started through the API mid-call"
d_ag="$(peer_dir od-agent agent.ulaw)"; d_ca="$(peer_dir od-caller customer.ulaw)"
peer od-agent "$d_ag" 60 -sf "$scen/uas_answer.xml" -i "$AGENTS" -mi "$AGENTS" -p 5188 -mp 49150 -m 1 -timeout 50s
p_ag=$peer_pid; sleep 0.5
peer od-caller "$d_ca" 60 -sf "$scen/dir_uac_talk.xml" -s 2007 "$GW" -i "$TRUNK" -mi "$TRUNK" -p 5197 -mp 49160 \
  -m 1 -d 8000 -key caller 07700900207 -cid_str "dir-ondemand-%u@%s" -timeout 50s
p_ca=$peer_pid
id="$(live_bridged "$(by_cid dir-ondemand-1)")"
if [[ -z $id ]]; then bad "7. call not bridged within 20 s"
else
  sleep 2   # 2 s of unrecorded conversation first
  rc=0; cg call record "$id" --token "$TOKEN" >od-start.out 2>&1 || rc=$?
  (( rc == 0 )) && ok "7. call record $id: exit 0" || bad "7. call record $id: exit $rc: $(tail -n 1 od-start.out)"
  rc=0; cg call record "$id" --token "$TOKEN" >od-again.out 2>&1 || rc=$?
  (( rc != 0 )) && ok "7. a second call record is refused (exit $rc): $(tail -n 1 od-again.out)" \
    || bad "7. a second call record $id: exit 0 (want refused: already recording)"
fi
sipp_verdict "7. caller" "$p_ca" "$d_ca" 60 || true
sipp_verdict "7. agent" "$p_ag" "$d_ag" 20 || true
r="$(row "$(by_cid dir-ondemand-1)")"
echo "row: $r"
jqcheck "7" "$r" '.record_policy == "on-demand" and .recording_state == "ok" and .recording_started_by == "api:crm"' \
  "record_policy on-demand, recorded, started by api:crm"
# Started >= 1.5 s after the bridge, and the audio covers only what followed.
jqcheck "7" "$r" '.recording_started_at_ms != null and .recording_started_at_ms >= .bridged_at_ms + 1500
                  and .audio_ms != null and .audio_ms <= .ended_at_ms - .recording_started_at_ms + 500
                  and .audio_ms <= .ended_at_ms - .bridged_at_ms - 1000' \
  "recording starts when asked (>= 1.5 s after the bridge) and holds only what followed"
recording_ok "7.ondemand" "$(jq -r '.recording_id // empty' <<<"${r:-null}")"
fi

# ---------------------------------------------------------------- 6. baresip
if want 6; then
  step "6. baresip as the agent's phone and as the customer"
  # shellcheck source=tests/interop/directions_baresip.sh
  source "$here/directions_baresip.sh"
fi

# ---------------------------------------------------------------- end
step "gateway"
if kill -0 "$gw_pid" 2>/dev/null; then ok "gateway still running after all calls"; else bad "gateway exited during the calls"; fi
kill -TERM "$gw_pid" 2>/dev/null || true
for _ in $(seq 1 30); do kill -0 "$gw_pid" 2>/dev/null || break; sleep 0.5; done
if grep -q -E 'panicked at' callgate.log 2>/dev/null; then bad "callgate.log shows a panic: $(grep -m1 'panicked at' callgate.log)"
else ok "no panic in callgate.log"; fi

summary_and_exit

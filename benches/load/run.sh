#!/usr/bin/env bash
# callgate call-load harness: N concurrent recorded calls through a real gateway on loopback,
# SIPp on both sides streaming PCMU both ways, and (by default) the same load through rtpengine
# (userspace forwarding) in the same run, so the two CPU figures are taken back to back.
#
#   bash benches/load/run.sh [-n CALLS] [-r CPS] [-w WINDOW_S] [--no-rtpengine] [--keep]
#
#   -n CALLS         concurrent calls (default 200; SIPp port ranges allow up to ~2400)
#   -r CPS           call arrival rate while ramping up (SIPp -r; default 50)
#   -w WINDOW_S      steady-state window in which CPU and RSS are measured (default 10)
#   --no-rtpengine   callgate only (the CI smoke)
#   --keep           keep the work directory (kept anyway on failure)
#   --hold S         sustained-rate mode: every call ends S seconds after it is answered, so the
#                    rate is kept up for CALLS/CPS seconds with about CPS*(S+1) calls up at once;
#                    no steady-state window (calls come and go): CPU is reported per call
#                    (setup, announcement, S s of media, teardown); callgate only
#
# Environment: CALLGATE_BIN (default: cargo build --release, target/release/callgate),
# LOAD_SIP_PORT (default 5370), LOAD_ANNOUNCE_S (default 1), LOAD_CAPTURE_S (tcpdump window for
# the latency probe, default 3; 0 = no probe), LOAD_CAPTURE_SAMPLE (the probe keeps one RTP packet
# in N, chosen by sequence number so a packet and its relayed copy are kept together; a power of
# two, default 1 = every packet: at 1,500 calls tcpdump cannot keep up with every one),
# LOAD_WORK (work directory; default mktemp),
# LOAD_MEDIA_RT (media.realtime_priority of the gateway: 0 = normal scheduling, the default;
# 1..99 = SCHED_FIFO media threads), LOAD_SHARED_PORTS=1 (media.shared_ports: one port pair per
# media thread for every call, calls found by the peer's address), LOAD_MAX_LOAD (media.max_load, admission control: default
# 100 = off, so capacity runs measure the relay, not the refusals; empty = key not written, for
# builds older than the key), LOAD_AUDIO: `tones` (default: both sides send a continuous loud tone, the worst case for the
# in-band DTMF detectors) or `conversation` (turn-taking: each side talks 2 s, band-limited noise
# at about -21 dBFS, then listens 2 s in silence, as in a real call), LOAD_S3FS (path to an
# s3s-fs binary: recordings go to S3 through the spool, `[recording] storage = "s3://…"`, with
# s3s-fs on 127.0.0.1:LOAD_SIP_PORT+700; the run then also waits for the spool to empty, counts
# the objects, and verifies every recording from the bucket; LOAD_S3FS_ROOT: where s3s-fs keeps
# the objects, default WORK/s3 on the gateway's disk; a tmpfs such as /dev/shm/x models a
# server elsewhere).
#
# What happens, per relay (callgate, then rtpengine):
#   1. the relay starts; its idle RSS is read from /proc/PID/status;
#   2. a SIPp agent (scenarios/uas_load.xml) answers and streams agent.ulaw; a SIPp caller
#      (scenarios/uac_load.xml) places CALLS calls at CPS and streams caller.ulaw; through
#      callgate every call hears a LOAD_ANNOUNCE_S announcement and is recorded;
#   3. once every call is up (ramp + announcement + 3 s), utime+stime (/proc/PID/stat) and VmRSS
#      are sampled, again WINDOW_S later: CPU seconds per call-second = dCPU / (CALLS * WINDOW_S);
#      stime alone is reported as the kernel's share; the host's UDP InDatagrams (/proc/net/snmp)
#      over the window count the datagrams the relay received (SIPp does not read the RTP sent
#      to it), giving CPU per datagram (independent of SIPp falling behind on loaded cores); the
#      drops column of /proc/net/udp summed over the relay's ports counts datagrams its sockets
#      dropped (receive queue full);
#   4. then tcpdump captures LOAD_CAPTURE_S of RTP on lo (after the CPU window, so the capture
#      does not load the measurement) and loadtool.py latency matches each packet entering the
#      relay with the same packet (SSRC, seq, ts) leaving it: added latency p50/p99, packets
#      that never left;
#   5. calls end (the caller hangs up), SIPp's verdicts are read; for callgate the call records
#      (`calls list --json`) give packets and loss per direction, and EVERY recording must pass
#      `callgate recording verify`; for rtpengine, ng `delete` returns its packet counters.
#
# rtpengine is driven by its ng protocol (offer/answer/delete, bencode over UDP) from a minimal
# SIP proxy in loadtool.py; started with --table=-1 (no kernel forwarding, userspace only).
#
# Output: a summary block, and the same as JSON in WORK/summary.json. Exit status non-zero if a
# call failed, a recording is missing or does not verify, or the gateway died.
# Never uses SIPp -bg: every SIPp runs in the foreground of a background job, killed by PID.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
scen="$here/scenarios"
tool="$here/loadtool.py"

CALLS=200
RATE=50
WINDOW=10
RTPE=1
KEEP=0
HOLD_FIXED=""
while (( $# )); do
  case "$1" in
    -n) CALLS=$2; shift 2 ;;
    -r) RATE=$2; shift 2 ;;
    -w) WINDOW=$2; shift 2 ;;
    --no-rtpengine) RTPE=0; shift ;;
    --keep) KEEP=1; shift ;;
    --hold) HOLD_FIXED=$2; RTPE=0; shift 2 ;;
    -h|--help) sed -n '2,40p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "load: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
SIP_PORT="${LOAD_SIP_PORT:-5370}"
ANNOUNCE_S="${LOAD_ANNOUNCE_S:-1}"
CAPTURE_S="${LOAD_CAPTURE_S:-3}"
CAPTURE_SAMPLE="${LOAD_CAPTURE_SAMPLE:-1}"
(( CAPTURE_SAMPLE > 0 && (CAPTURE_SAMPLE & (CAPTURE_SAMPLE - 1)) == 0 )) \
  || { echo "load: LOAD_CAPTURE_SAMPLE must be a power of two, got '$CAPTURE_SAMPLE'" >&2; exit 2; }
SETTLE_S=3
RAMP_S=$(( (CALLS + RATE - 1) / RATE ))
# Every call must still be up at the end of the window and the capture.
HOLD_S=$(( RAMP_S + ANNOUNCE_S + SETTLE_S + WINDOW + CAPTURE_S + 4 ))
if [[ -n $HOLD_FIXED ]]; then HOLD_S=$HOLD_FIXED; fi
CLK_TCK=$(getconf CLK_TCK)
RELAY_LO=30000
RELAY_HI=39999

fail=0
problems=()
bad() { fail=$((fail + 1)); problems+=("$*"); echo "FAIL $*"; }
say() { echo "[load $(date -u +%H:%M:%S)] $*"; }

pids=()
work=""
finish() {
  local rc=$? p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n $work && -d $work && -z ${LOAD_WORK:-} ]]; then
    if (( fail == 0 && rc == 0 && KEEP == 0 )); then rm -rf "$work"; else echo "load: work directory kept: $work"; fi
  fi
}
trap finish EXIT
trap 'exit 130' INT TERM

for t in sipp sox python3 jq getconf; do
  command -v "$t" >/dev/null || { echo "load: required tool '$t' not found (apt-get install sip-tester sox jq python3)" >&2; exit 1; }
done
if (( RTPE )) && ! command -v rtpengine >/dev/null; then
  echo "load: rtpengine not found (apt-get install rtpengine-daemon), or pass --no-rtpengine" >&2; exit 1
fi
have_tcpdump=0
if (( CAPTURE_S > 0 )) && command -v tcpdump >/dev/null && [[ $(id -u) == 0 ]]; then have_tcpdump=1; fi

if [[ -n ${CALLGATE_BIN:-} ]]; then
  BIN="$CALLGATE_BIN"
else
  (cd "$root" && timeout 2400 cargo build --release --locked -q)
  BIN="${CARGO_TARGET_DIR:-$root/target}/release/callgate"
fi
[[ -x $BIN ]] || { echo "load: gateway binary $BIN missing" >&2; exit 1; }

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

if [[ -n ${LOAD_WORK:-} ]]; then
  if [[ -e $LOAD_WORK && -n $(ls -A "$LOAD_WORK" 2>/dev/null) ]]; then
    echo "load: LOAD_WORK=$LOAD_WORK is not empty (the gateway's key and database must be fresh)" >&2; exit 1
  fi
  work="$LOAD_WORK"; mkdir -p "$work"
else work="$(mktemp -d -t callgate-load.XXXXXX)"; fi
cd "$work"
mkdir -p recordings
S3_PORT=$((SIP_PORT + 700))
if [[ -n ${LOAD_S3FS:-} ]]; then
  [[ -x $LOAD_S3FS ]] || { echo "load: LOAD_S3FS=$LOAD_S3FS is not an executable" >&2; exit 1; }
  s3_root="${LOAD_S3FS_ROOT:-$work/s3}"
  mkdir -p "$s3_root/callgate-load"
  [[ $s3_root == "$work/s3" ]] || ln -sfn "$s3_root" "$work/s3"
  export AWS_ACCESS_KEY_ID=callgate-load AWS_SECRET_ACCESS_KEY=callgate-load-secret AWS_REGION=us-east-1
  "$LOAD_S3FS" --host 127.0.0.1 --port "$S3_PORT" --access-key "$AWS_ACCESS_KEY_ID" \
    --secret-key "$AWS_SECRET_ACCESS_KEY" "$s3_root" >s3s-fs.log 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null && break; sleep 0.1; done
  say "s3s-fs on 127.0.0.1:$S3_PORT (recordings through the spool to s3://callgate-load/rec)"
fi
say "work dir $work; $CALLS calls at $RATE cps, window ${WINDOW}s, hold ${HOLD_S}s, announcement ${ANNOUNCE_S}s"
sox -n -r 8000 -c 1 -b 16 notice.wav synth "$ANNOUNCE_S" sine 1000 vol 0.5
case "${LOAD_AUDIO:-tones}" in
  tones)
    sox -n -r 8000 -c 1 -e mu-law -t raw caller.ulaw synth 4 sine 440 vol 0.5
    sox -n -r 8000 -c 1 -e mu-law -t raw agent.ulaw synth 4 sine 660 vol 0.5 ;;
  conversation)
    # 2 s of speech-band noise (300-3400 Hz, about -21 dBFS) and 2 s of silence; the agent's
    # turn is the other half of the same 4 s loop.
    sox -n -r 8000 -c 1 -b 16 talk.wav synth 2 pinknoise sinc 300-3400 vol 0.8
    sox -n -r 8000 -c 1 -b 16 hush.wav trim 0 2
    sox talk.wav hush.wav -e mu-law -t raw caller.ulaw
    sox hush.wav talk.wav -e mu-law -t raw agent.ulaw ;;
  *) echo "load: LOAD_AUDIO must be tones or conversation" >&2; exit 2 ;;
esac

CFG="$work/callgate.toml"
cat >"$CFG" <<EOF
# generated by benches/load/run.sh
[sip]
listen = "127.0.0.1:$SIP_PORT"
advertise = "127.0.0.1"
trusted = ["127.0.0.0/8"]

[media]
rtp_ports = "$RELAY_LO-$RELAY_HI"
advertise = "127.0.0.1"
$( [[ ${LOAD_MEDIA_RT:-0} != 0 ]] && echo "realtime_priority = $LOAD_MEDIA_RT" )
$( [[ -n ${LOAD_MAX_LOAD-100} ]] && echo "max_load = ${LOAD_MAX_LOAD-100}" )
$( [[ ${LOAD_SHARED_PORTS:-0} != 0 ]] && echo "shared_ports = true" )

[call]
max_calls = $(( CALLS + 100 > 2000 ? CALLS + 100 : 2000 ))

[[route]]
match = "*"
target = "sip:agent@127.0.0.1:$((SIP_PORT + 1))"
announcement = "$work/notice.wav"
record = true

[recording]
$( if [[ -n ${LOAD_S3FS:-} ]]; then
  printf 'storage = "s3://callgate-load/rec"\nspool = "%s/spool"\ns3_endpoint = "http://127.0.0.1:%s"\n' "$work" "$S3_PORT"
else
  printf 'storage = "%s/recordings"\n' "$work"
fi )
flush = "1s"

[keys]
kek_file = "$work/kek.key"

[portal]
listen = "127.0.0.1:$((SIP_PORT + 800))"

[database]
url = "sqlite://$work/callgate.db?mode=rwc"
EOF
cg() { timeout 120 "$BIN" --config "$CFG" "$@"; }
cg keys init >keys-init.log 2>&1 || { bad "callgate keys init: $(tail -n 1 keys-init.log)"; exit 1; }

stat_ticks() { # PID AWK_EXPR: clock ticks from /proc/PID/stat (after the name: $12 utime, $13 stime)
  local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  s=${s##*) }
  awk "{print $2}" <<<"$s"
}
cpu_ticks() { stat_ticks "$1" '$12 + $13'; } # utime + stime
sys_ticks() { stat_ticks "$1" '$13'; }       # stime: the kernel's share (socket calls, epoll, softirq)
udp_in() { awk '/^Udp: [0-9]/ {print $2}' /proc/net/snmp; } # datagrams delivered to sockets, host-wide
relay_drops() { # datagrams the relay's sockets dropped (receive queue full), summed over its ports
  python3 -c '
import sys
lo, hi, d = int(sys.argv[1]), int(sys.argv[2]), 0
for f in ("/proc/net/udp", "/proc/net/udp6"):
    try:
        lines = open(f).read().splitlines()[1:]
    except OSError:
        continue
    for l in lines:
        c = l.split()
        if lo <= int(c[1].rsplit(":", 1)[1], 16) <= hi:
            d += int(c[-1])
print(d)' "$RELAY_LO" "$RELAY_HI" 2>/dev/null || echo ""
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
sipp_stat() { # file field -> total of "Successful call" / "Failed call" (cumulative column)
  grep -E "$2" "$1" 2>/dev/null | tail -n 1 | awk -F'|' '{gsub(/ /,"",$3); print $3+0}' || echo 0
}

sipp_common=(-i 127.0.0.1 -mi 127.0.0.1 -nostdin -timeout_error -max_retrans 5 -trace_err
             -trace_screen -max_log_size 2000000)

# run_phase NAME PID TARGET_PORT UAS_PORT: agent + caller through the relay, measure PID.
# Sets: ph_cpu_s ph_sys_s ph_dgrams ph_drops ph_callsec ph_rss_idle ph_rss_peak ph_succ ph_fail ph_lat ph_wall
run_phase() {
  local name=$1 pid=$2 target=$3 uas_port=$4
  mkdir -p "$name"
  ln -sf ../caller.ulaw "$name/caller.ulaw"; ln -sf ../agent.ulaw "$name/agent.ulaw"
  ph_rss_idle=$(rss_kib "$pid")
  (cd "$name" && exec timeout $((HOLD_S + 300)) sipp -sf "$scen/uas_load.xml" -p "$uas_port" -mp 40000 \
      -m "$CALLS" -timeout $((HOLD_S + 240))s "${sipp_common[@]}" >uas.out 2>&1) &
  local uas=$!; pids+=("$uas")
  sleep 0.5
  local t_start; t_start=$(date +%s.%N)
  (cd "$name" && exec timeout $((HOLD_S + 300)) sipp -sf "$scen/uac_load.xml" -s 2001 "127.0.0.1:$target" \
      -p $((uas_port + 10)) -mp 50000 -m "$CALLS" -l "$CALLS" -r "$RATE" -d $((HOLD_S * 1000)) \
      -timeout $((HOLD_S + 240))s "${sipp_common[@]}" >uac.out 2>&1) &
  local uac=$!; pids+=("$uac")
  ph_cpu_call=""
  if [[ -n $HOLD_FIXED ]]; then
    # Calls come and go: CPU from the first INVITE to the last BYE, per call.
    local h0; h0=$(cpu_ticks "$pid")
    local rc=0; wait "$uac" || rc=$?
    ph_cpu_call=$(awk -v a="$h0" -v b="$(cpu_ticks "$pid")" -v k="$CLK_TCK" -v n="$CALLS" 'BEGIN {printf "%.3f", (b - a) / k / n * 1000}')
    ph_rss_peak=$(rss_kib "$pid"); ph_cpu_s=""; ph_sys_s=""; ph_dgrams=""; ph_drops=""; ph_callsec=""; ph_lat='{}'
  else
    sleep $((RAMP_S + ANNOUNCE_S + SETTLE_S))
    kill -0 "$pid" 2>/dev/null || { bad "$name died during the ramp"; return 1; }
    local c0 c1 t0 t1 r0 r1 s0 s1 u0 u1
    c0=$(cpu_ticks "$pid"); s0=$(sys_ticks "$pid"); u0=$(udp_in); t0=$(date +%s.%N); r0=$(rss_kib "$pid")
    sleep "$WINDOW"
    c1=$(cpu_ticks "$pid"); s1=$(sys_ticks "$pid"); u1=$(udp_in); t1=$(date +%s.%N); r1=$(rss_kib "$pid")
    # SIPp does not read the RTP it is sent (its sockets drop it), so the datagrams delivered
    # on the host in the window are the ones the relay received (and the few SIP messages).
    ph_dgrams=$(( u1 - u0 ))
    ph_drops=$(relay_drops)
    ph_rss_peak=$(( r0 > r1 ? r0 : r1 ))
    ph_cpu_s=$(awk -v a="$c0" -v b="$c1" -v k="$CLK_TCK" 'BEGIN {printf "%.3f", (b - a) / k}')
    ph_sys_s=$(awk -v a="$s0" -v b="$s1" -v k="$CLK_TCK" 'BEGIN {printf "%.3f", (b - a) / k}')
    ph_callsec=$(awk -v a="$t0" -v b="$t1" -v n="$CALLS" 'BEGIN {printf "%.1f", (b - a) * n}')
    ph_lat='{}'
    if (( have_tcpdump )); then
      timeout $((CAPTURE_S + 5)) tcpdump -i lo -n -U -B 65536 --time-stamp-precision=nano -s 128 -w "$name/rtp.pcap" \
        "udp and portrange $RELAY_LO-$RELAY_HI and udp[10:2] & $(( CAPTURE_SAMPLE - 1 )) == 0" >"$name/tcpdump.log" 2>&1 &
      local cap=$!; pids+=("$cap")
      sleep "$CAPTURE_S"
      kill -INT "$cap" 2>/dev/null || true; wait "$cap" 2>/dev/null || true
      ph_lat=$(timeout 300 python3 "$tool" latency "$name/rtp.pcap" "$RELAY_LO" "$RELAY_HI" 2>"$name/latency.err" || echo '{}')
    fi
    local rc=0; wait "$uac" || rc=$?
  fi
  ph_wall=$(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  ph_succ=$(sipp_stat "$name/uac.out" 'Successful call'); ph_fail=$(sipp_stat "$name/uac.out" 'Failed call')
  (( rc == 0 )) || bad "$name: SIPp caller exit $rc (successful $ph_succ, failed $ph_fail); see $work/$name/uac.out"
  (( ph_succ == CALLS )) || bad "$name: $ph_succ of $CALLS calls successful at the caller"
  local deadline=$(( $(date +%s) + 20 ))
  while kill -0 "$uas" 2>/dev/null && (( $(date +%s) < deadline )); do sleep 0.3; done
  kill "$uas" 2>/dev/null || true; wait "$uas" 2>/dev/null || true
  kill -0 "$pid" 2>/dev/null || bad "$name died during the calls"
}

# ---------------------------------------------------------------- callgate
say "callgate: starting $BIN"
"$BIN" --config "$CFG" serve >callgate.log 2>&1 &
gw=$!; pids+=("$gw")
python3 "$root/tests/interop/sip_probe.py" ready 127.0.0.1 "$SIP_PORT" 20 >/dev/null 2>&1 \
  || { bad "gateway not answering SIP on 127.0.0.1:$SIP_PORT"; tail -n 20 callgate.log; exit 1; }
run_phase callgate "$gw" "$SIP_PORT" $((SIP_PORT + 1)) || true
cg_cpu=$ph_cpu_s; cg_sys=$ph_sys_s; cg_dg=$ph_dgrams; cg_drops=$ph_drops; cg_cs=$ph_callsec; cg_idle=$ph_rss_idle; cg_peak=$ph_rss_peak
cg_succ=$ph_succ; cg_fail=$ph_fail; cg_lat=$ph_lat; cg_wall=$ph_wall; cg_cpu_call=$ph_cpu_call
# Last hangups: final chunks sealed, call rows written. Under load the database writes lag
# behind the calls; wait (up to 120 s) until no row is still open, and report how long it took.
t_settle=$(date +%s.%N)
for _ in $(seq 1 240); do
  sleep 0.5
  cg calls list --json --limit $(( CALLS + 1000 )) >calls.json 2>calls-list.err || continue
  open=$(jq '[.[] | select(.ended_at_ms == null or .recording_state == "recording")] | length' calls.json 2>/dev/null || echo 1)
  rows=$(jq 'length' calls.json 2>/dev/null || echo 0)
  # Calls refused at the door (admission control) leave no row: wait for the ones SIPp had.
  (( open == 0 && rows >= cg_succ )) && break
done
settle_s=$(awk -v a="$t_settle" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
say "callgate: call records settled ${settle_s}s after the last call ended"
refused=$(cat callgate/uac_load_*_errors.log 2>/dev/null | grep -c 'media overloaded' || true)
if (( refused > 0 )); then
  say "callgate: $refused INVITEs refused with 503 \"media overloaded\" (admission control, media.max_load)"
  # Refused calls were never up: the window's call-seconds are those of the calls that were.
  cg_cs=$(awk -v cs="$cg_cs" -v n="$CALLS" -v r="$refused" 'BEGIN {printf "%.1f", cs * (n - r) / n}')
fi
[[ -s calls.json ]] || bad "calls list --json: $(tail -n 1 calls-list.err)"
cg_calls=$(python3 "$tool" calls calls.json "$CALLS" 2>/dev/null || echo '{}')
n_rec=$(jq '.recording_ids | length' <<<"$cg_calls" 2>/dev/null || echo 0)
n_recok=$(jq '.recording_ok' <<<"$cg_calls" 2>/dev/null || echo 0)
(( n_rec == CALLS )) || bad "callgate: $n_rec recordings for $CALLS calls"
(( n_recok == CALLS )) || bad "callgate: $n_recok recordings in state ok for $CALLS calls"
# Zero loss is the target: a packet missing from a recorded stream, or a datagram the kernel
# dropped because the gateway did not read its socket in time, fails the run.
cg_lost=$(jq '(.caller_lost // 0) + (.agent_lost // 0)' <<<"$cg_calls" 2>/dev/null || echo 0)
(( cg_lost == 0 )) || bad "callgate: $cg_lost packets lost (call records, both directions)"
(( ${cg_drops:-0} == 0 )) || bad "callgate: $cg_drops datagrams dropped at its sockets (receive queues full)"
if [[ -n ${LOAD_S3FS:-} ]]; then
  # Uploads start at each hangup; wait (up to 120 s) until the spool is empty.
  t_up=$(date +%s.%N)
  for _ in $(seq 1 240); do
    [[ -z $(ls -A spool 2>/dev/null) ]] && break
    sleep 0.5
  done
  up_s=$(awk -v a="$t_up" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  n_obj=$(find s3/callgate-load/rec -name '*.cgrec' 2>/dev/null | wc -l)
  n_spool=$(ls -A spool 2>/dev/null | wc -l)
  say "callgate: $n_obj objects in the bucket, $n_spool files left in the spool, ${up_s}s after the call records settled"
  (( n_obj == CALLS && n_spool == 0 )) || bad "callgate: $n_obj of $CALLS recordings uploaded ($n_spool left in the spool)"
fi
say "callgate: verifying $n_rec recordings"
v_bad=0
while read -r id; do
  [[ -n $id ]] || continue
  if ! cg recording verify "$id" >"verify.log" 2>&1; then
    v_bad=$((v_bad + 1)); bad "recording verify $id: $(tail -n 1 verify.log)"
  fi
done < <(jq -r '.recording_ids[]' <<<"$cg_calls" 2>/dev/null)
v_ok=$(( n_rec - v_bad ))
kill -TERM "$gw" 2>/dev/null || true
for _ in $(seq 1 60); do kill -0 "$gw" 2>/dev/null || break; sleep 0.5; done
if grep -q 'panicked at' callgate.log; then bad "callgate.log shows a panic"; fi

# ---------------------------------------------------------------- rtpengine
re_cpu=""; re_sys=""; re_dg=""; re_drops=""; re_cs=""; re_idle=""; re_peak=""; re_succ=""; re_fail=""; re_lat='{}'; re_del='{}'; re_wall=""
if (( RTPE )); then
  NG_PORT=$((SIP_PORT + 900))
  say "rtpengine: starting (userspace forwarding, --table=-1)"
  rtpengine --foreground --log-stderr --table=-1 --interface=127.0.0.1 --listen-ng="127.0.0.1:$NG_PORT" \
    --port-min="$RELAY_LO" --port-max="$RELAY_HI" --log-level=4 --timeout=60 --delete-delay=0 \
    >rtpengine.log 2>&1 &
  re=$!; pids+=("$re")
  : >rtpe-callids
  python3 "$tool" proxy $((SIP_PORT + 2)) $((SIP_PORT + 3)) "$NG_PORT" rtpe-callids >proxy.log 2>&1 &
  px=$!; pids+=("$px")
  sleep 1.5
  if kill -0 "$re" 2>/dev/null; then
    run_phase rtpengine "$re" $((SIP_PORT + 2)) $((SIP_PORT + 3)) || true
    re_cpu=$ph_cpu_s; re_sys=$ph_sys_s; re_dg=$ph_dgrams; re_drops=$ph_drops; re_cs=$ph_callsec; re_idle=$ph_rss_idle; re_peak=$ph_rss_peak
    re_succ=$ph_succ; re_fail=$ph_fail; re_lat=$ph_lat; re_wall=$ph_wall
    re_del=$(timeout 120 python3 "$tool" rtpe-delete "$NG_PORT" rtpe-callids 2>/dev/null || echo '{}')
  else
    bad "rtpengine exited at start: $(tail -n 3 rtpengine.log | tr '\n' ' ')"
  fi
  kill "$px" 2>/dev/null || true
  kill -TERM "$re" 2>/dev/null || true
fi

# ---------------------------------------------------------------- summary
python3 - "$CALLS" "$RATE" "$WINDOW" "$cg_cpu" "$cg_cs" "$cg_idle" "$cg_peak" "$cg_succ" "$cg_fail" \
  "$cg_lat" "$cg_calls" "$v_ok" "$n_rec" "$re_cpu" "$re_cs" "$re_idle" "$re_peak" "$re_succ" "$re_fail" \
  "$re_lat" "$re_del" "$fail" "$settle_s" "$cg_cpu_call" "${HOLD_FIXED:-}" "$cg_sys" "$re_sys" "$cg_dg" "$re_dg" "$cg_drops" "$re_drops" "${refused:-0}" >summary.json <<'EOF'
import json, sys
a = sys.argv[1:]
def f(x):
    try: return float(x)
    except ValueError: return None
def j(x):
    try: return json.loads(x)
    except ValueError: return {}
calls, rate, window = int(a[0]), int(a[1]), int(a[2])
cg_calls = j(a[10]); cg_calls.pop("recording_ids", None)
refused = int(a[31])
def relay(cpu, cs, idle, peak, succ, fail, lat, sys_s, dgrams, drops, up):
    cpu, cs, idle, peak, sys_s, dgrams = f(cpu), f(cs), f(idle), f(peak), f(sys_s), f(dgrams)
    if cpu is None or not cs:
        return None
    return {"cpu_s": cpu, "call_s": cs, "cpu_ms_per_call_s": round(cpu / cs * 1000, 4),
            # stime alone: what the kernel spends for the process (UDP send/receive, epoll).
            "kernel_ms_per_call_s": round(sys_s / cs * 1000, 4) if sys_s is not None else None,
            # Per datagram received in the window (each is also sent on): independent of how
            # closely SIPp kept its 50 packets a second per stream on the loaded cores.
            "datagrams_in_window": dgrams,
            "datagrams_per_call_s": round(dgrams / cs, 1) if dgrams else None,
            "cpu_us_per_datagram": round(cpu / dgrams * 1e6, 2) if dgrams else None,
            "socket_drops": f(drops),
            "calls_per_core": round(cs / cpu / 1, 0) if cpu else None,
            "rss_idle_kib": idle, "rss_peak_kib": peak,
            # Per call up: calls refused at the door (admission control) hold no memory.
            "rss_per_call_kib": round((peak - idle) / up, 1) if peak and idle and up else None,
            "sipp_successful": f(succ), "sipp_failed": f(fail), "latency": j(lat)}
s = {"calls": calls, "rate_cps": rate, "window_s": window,
     "callgate": relay(*a[3:9], a[9], a[25], a[27], a[29], calls - refused), "callgate_calls": cg_calls,
     "callgate_refused_overload": refused,
     "recordings_verified": int(a[11]), "recordings": int(a[12]),
     "rtpengine": relay(*a[13:19], a[19], a[26], a[28], a[30], calls), "rtpengine_delete": j(a[20]), "failures": int(a[21]),
     "callgate_records_settle_s": f(a[22]),
     "hold_s": f(a[24]), "callgate_cpu_ms_per_call": f(a[23])}
if s["callgate"] and s["rtpengine"] and s["rtpengine"]["cpu_ms_per_call_s"]:
    s["ratio_cpu_callgate_over_rtpengine"] = round(
        s["callgate"]["cpu_ms_per_call_s"] / s["rtpengine"]["cpu_ms_per_call_s"], 2)
print(json.dumps(s, indent=1))
EOF
echo
if [[ -n $HOLD_FIXED ]]; then echo "=== load summary ($CALLS calls, $RATE cps, each held ${HOLD_FIXED}s) ==="
else echo "=== load summary ($CALLS calls, $RATE cps, ${WINDOW}s window) ==="; fi
jq -r '
  def row(n; r): "\(n): CPU \(r.cpu_s) s over \(r.call_s) call-s = \(r.cpu_ms_per_call_s) ms CPU per call-second (\(r.calls_per_core) calls per core; kernel \(r.kernel_ms_per_call_s) ms; \(r.datagrams_per_call_s) datagrams in per call-second, \(r.cpu_us_per_datagram) us per datagram; \(r.socket_drops) dropped at its sockets); RSS idle \(r.rss_idle_kib) KiB, peak \(r.rss_peak_kib) KiB, \(r.rss_per_call_kib) KiB per call; SIPp \(r.sipp_successful) ok / \(r.sipp_failed) failed; added latency p50 \(r.latency.p50_us) us, p99 \(r.latency.p99_us) us, max \(r.latency.max_us) us over \(r.latency.matched) packets, never left \(r.latency.unmatched_in), >20 ms \(r.latency.late_20ms)";
  (if .callgate then row("callgate (recorded)"; .callgate)
   elif .hold_s then "callgate (recorded, calls held \(.hold_s) s): CPU \(.callgate_cpu_ms_per_call) ms per call (setup, announcement, media, teardown)"
   else "callgate: no figures" end),
  "callgate calls: \(.callgate_calls | {answered, bridged, recording_ok, announcement_played, caller_packets, caller_lost, agent_packets, agent_lost, arrival_cps, invite_to_bridge_ms_p50, invite_to_bridge_ms_max, causes} | tojson)",
  "recordings verified: \(.recordings_verified) of \(.recordings); call records settled \(.callgate_records_settle_s) s after the last call ended",
  (if .rtpengine then row("rtpengine (relay only)"; .rtpengine) else empty end),
  (if .rtpengine then "rtpengine delete totals: \(.rtpengine_delete | tojson)" else empty end),
  (if .ratio_cpu_callgate_over_rtpengine then "ratio callgate CPU per recorded call / rtpengine CPU per relayed call: \(.ratio_cpu_callgate_over_rtpengine)" else empty end)
' summary.json
for p in "${problems[@]}"; do echo "  problem: $p"; done
echo "load: $(( fail == 0 ? 1 : 0 )) passed, $(( fail == 0 ? 0 : 1 )) failed"
(( fail == 0 ))

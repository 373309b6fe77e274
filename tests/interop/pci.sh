#!/usr/bin/env bash
# Keypad protection with real peers and an independent decoder: a SIPp caller streams speech-like
# noise, a made-up card number + security code + '#' as in-band DTMF tones (sox), and more noise;
# a SIPp agent answers. multimon-ng (not callgate's detector) must find every key in what the
# caller sent and none in the decrypted recording; the call record must list the pause; the card
# number must appear in no log, database, recording or WAV byte.
#
#   CALLGATE_BIN=target/debug/callgate bash tests/interop/pci.sh
#
# Needs sipp, sox, jq, python3, multimon-ng. RFC 4733 and SIP INFO are covered by
# tests/pci_path.rs (SIPp's dtmf_2833_N.pcap replay one fixed timestamp/sequence per digit, so a
# card number with repeated digits cannot be keyed faithfully with them).
# Ports: gateway 5470 (SIP), 35000-35999 (RTP); SIPp agent 5481, caller 5491, RTP 48400+.
# Last line: "pci: N passed, M failed".
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
scen="$here/scenarios"
BIN="${CALLGATE_BIN:-$root/target/debug/callgate}"
CARD=4929123456789012
CVV=737
KEYS="${CARD}${CVV}#"

pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
pids=()
work="$(mktemp -d -t callgate-pci.XXXXXX)"
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if (( fail == 0 )); then rm -rf "$work"; else echo "pci: logs kept in $work"; fi
}
trap cleanup EXIT
cd "$work"

[[ -x $BIN ]] || { echo "no gateway binary at $BIN"; exit 1; }
for t in sipp sox jq python3 multimon-ng; do
  command -v "$t" >/dev/null || { echo "pci: $t not installed"; exit 1; }
done

# --- the caller's audio: 2 s speech-like noise, 0.3 s silence, 20 keys (80 ms tone / 80 ms gap,
# two sines summed at about -10 dBFS), 1.5 s silence, 2 s speech-like noise.
raw() { sox -n -r 8000 -c 1 -b 16 -e signed -t raw - "$@"; }
declare -A ROW=([1]=697 [2]=697 [3]=697 [4]=770 [5]=770 [6]=770 [7]=852 [8]=852 [9]=852 ['*']=941 [0]=941 ['#']=941)
declare -A COL=([1]=1209 [2]=1336 [3]=1477 [4]=1209 [5]=1336 [6]=1477 [7]=1209 [8]=1336 [9]=1477 ['*']=1209 [0]=1336 ['#']=1477)
{
  raw synth 2 pinknoise sinc 300-3000 tremolo 3.1 60 gain -n -12
  raw synth 0.3 sine 0 gain -120
  for ((i = 0; i < ${#KEYS}; i++)); do
    k="${KEYS:i:1}"
    raw synth 0.08 sine "${ROW[$k]}" synth 0.08 sine mix "${COL[$k]}" gain -n -10
    raw synth 0.08 sine 0 gain -120
  done
  raw synth 1.5 sine 0 gain -120
  raw synth 2 pinknoise sinc 300-3000 tremolo 4.3 60 gain -n -12
} > caller.s16
sox -t raw -r 8000 -c 1 -b 16 -e signed caller.s16 -t raw -e mu-law caller.ulaw
sox -n -r 8000 -c 1 -e mu-law -t raw agent.ulaw synth 10 pinknoise sinc 300-3000 tremolo 2 50 gain -n -14
sox -n -r 8000 -c 1 -b 16 notice.wav synth 1 sine 1000 vol 0.5
secs=$(python3 -c "import os; print(os.path.getsize('caller.ulaw') / 8000)")

mm() { # multimon-ng over 8 kHz s16 raw on stdin; prints the decoded keys as one string
  sox -t raw -r 8000 -c 1 -b 16 -e signed - -t raw -r 22050 -c 1 -b 16 -e signed mm.raw
  multimon-ng -q -c -a DTMF -t raw mm.raw | sed -n 's/^DTMF: //p' | tr -d '\n'
}
sent="$(sox -t raw -r 8000 -c 1 -e mu-law caller.ulaw -t raw -b 16 -e signed - | mm)"
[[ $sent == "$KEYS" ]] && ok "multimon-ng finds all ${#KEYS} keys in the caller's sent audio" \
  || bad "multimon-ng on the caller's sent audio: '$sent' (want '$KEYS')"

cat > callgate.toml <<EOF
[sip]
listen = "127.0.0.1:5470"
advertise = "127.0.0.1"
trusted = ["127.0.0.0/8"]
[media]
rtp_ports = "35000-35999"
advertise = "127.0.0.1"
[[route]]
match = "2001"
target = "sip:agent@127.0.0.1:5481"
announcement = "$work/notice.wav"
[recording]
storage = "$work/recordings"
flush = "1s"
[keys]
kek_file = "$work/kek.key"
# Any free port: a gateway already on this host (the default 8080) must not stop the test.
[portal]
listen = "127.0.0.1:0"
[database]
url = "sqlite://$work/callgate.db?mode=rwc"
[pci]
auto_pause_on_caller_digits = true
mask_dtmf_to_agent = true
resume_on_hash = true
EOF
cg() { timeout 60 "$BIN" --config "$work/callgate.toml" "$@"; }

cg keys init >/dev/null
RUST_LOG=trace "$BIN" --config "$work/callgate.toml" serve >gw.log 2>&1 &
gw=$!; pids+=("$gw")
sleep 1
common=(-i 127.0.0.1 -mi 127.0.0.1 -nostdin -timeout 60s -timeout_error -trace_err)
timeout 90 sipp -sf "$scen/uas_answer.xml" -p 5481 -mp 48400 -m 1 "${common[@]}" >agent.out 2>&1 &
agent=$!; pids+=("$agent")
sleep 0.5
talk_ms=$(python3 -c "print(int($secs * 1000) - 200)")
if timeout 90 sipp -sf "$scen/uac_talk.xml" -s 2001 127.0.0.1:5470 -p 5491 -mp 48500 -m 1 \
    -d "$talk_ms" "${common[@]}" >caller.out 2>&1; then
  ok "caller: answered, streamed ${secs}s (keys in-band), BYE"
else bad "caller SIPp failed: $(cat "$work"/*uac_talk*errors.log 2>/dev/null | tail -n 3)"; fi
wait "$agent" || bad "agent SIPp failed"
sleep 0.5
kill "$gw"; wait "$gw" 2>/dev/null || true

row="$(cg calls list --json | tee calls.json | jq -c '.[0]')"
[[ $(jq -r .recording_state <<<"$row") == ok ]] && ok "recording ok" || bad "recording_state: $row"
p="$(jq -c '.pauses' <<<"$row")"
if [[ $(jq 'length' <<<"$p") == 1 && $(jq -r '.[0].trigger' <<<"$p") == caller_digits \
      && $(jq -r '.[0].digits' <<<"$p") == 19 && $(jq -r '.[0].resumed_by' <<<"$p") == hash ]]; then
  ok "call record: one pause, caller_digits, 19 digits, resumed by #"
else bad "call record pauses: $p"; fi
rec="$(jq -r .recording_id <<<"$row")"
cg recording verify "$rec" >/dev/null && ok "recording verifies" || bad "recording $rec does not verify"
cg recording decrypt "$rec" --out rec.wav >/dev/null 2>decrypt.err || bad "decrypt failed"
for ch in 1 2; do
  got="$(sox rec.wav -t raw -r 8000 -c 1 -b 16 -e signed - remix "$ch" | mm)"
  [[ -z $got ]] && ok "multimon-ng finds no DTMF in the recording's channel $ch" \
    || bad "multimon-ng decodes '$got' from the recording's channel $ch"
done
# Speech before and after the pause on the caller channel; silence where the keys were.
python3 - "$secs" <<'PY' && ok "recording: speech before and after, silence over the keyed span" || bad "recording levels (see above)"
import sys, wave, struct, math
w = wave.open("rec.wav"); n = w.getnframes(); d = w.readframes(n)
left = struct.unpack("<%dh" % (2 * n), d)[0::2]
def rms(a, b): s = left[int(a * 8000):int(b * 8000)]; return math.sqrt(sum(x * x for x in s) / max(1, len(s)))
# Find where the caller's first speech starts (first 100 ms block above -40 dBFS).
t0 = next(i / 10 for i in range(0, int(len(left) / 800)) if rms(i / 10, i / 10 + 0.1) > 300)
before, keyed, after = rms(t0 + 0.2, t0 + 1.8), rms(t0 + 2.4, t0 + 5.4), rms(t0 + 7.2, t0 + 8.6)
print(f"  caller speech starts at {t0:.1f} s; rms before {before:.0f}, keyed span {keyed:.0f}, after {after:.0f}")
sys.exit(0 if before > 300 and after > 300 and keyed < 5 else 1)
PY
hits=0
for f in gw.log calls.json decrypt.err rec.wav callgate.db* recordings/*; do
  [[ -e $f ]] || continue
  for pat in "$CARD" "4929 1234 5678 9012" "4929-1234-5678-9012" "${CARD}${CVV}"; do
    if grep -aqF -- "$pat" "$f"; then hits=$((hits + 1)); echo "  '$pat' found in $f"; fi
  done
done
(( hits == 0 )) && ok "card number in no log, database, recording or WAV byte" || bad "card number found $hits times"
grep -q panicked gw.log && bad "panic in the gateway log" || ok "no panic in the gateway log"
echo "pci: $pass passed, $fail failed"
(( fail == 0 ))

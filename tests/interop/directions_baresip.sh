# Sourced by directions.sh (check 6): baresip (Debian 1.0.0) on both sides of outbound calls.
#  6a. baresip is the agent's phone (SIP on 127.0.0.3:5187): `-e "/dial sip:07700900124@GW"`,
#      sends agent.wav (660 Hz), quits (BYE) after -t seconds; a SIPp customer answers on
#      127.0.0.2:5181 (check 1's scenario, 440 Hz).
#  6b. a SIPp agent (127.0.0.3) dials 07800900125 (route 0780* -> 127.0.0.2:5189) where baresip
#      is the customer: auto-answer, sends customer.wav (440 Hz); its account user is the
#      dialled number (baresip answers only INVITEs whose request-URI user is an account).
# Uses directions.sh's helpers and variables (peer, peer_dir, sipp_verdict, row, jqcheck,
# recording_ok, wire, snap, pids, work, scen, GW, TRUNK, AGENTS).

# baresip_start NAME SIP_ADDR RTP_RANGE SOURCE_WAV AOR TIMEOUT_S extra-args...: PID in $bs_pid
baresip_start() {
  local name=$1 listen=$2 rtp=$3 src=$4 aor=$5 to=$6; shift 6
  local d="$work/baresip-$name"
  mkdir -p "$d/conf"
  cat >"$d/conf/config" <<CFG
poll_method		epoll
sip_listen		$listen
audio_path		$d
audio_player		aufile,$d/heard.wav
audio_source		aufile,$src
audio_alert		aufile,$src
rtp_ports		$rtp
module_path		/usr/lib/baresip/modules
module			g711.so
module			aufile.so
module_app		account.so
module_app		menu.so
CFG
  echo "<$aor>;regint=0;answermode=auto;audio_codecs=PCMU/8000/1,PCMA/8000/1" >"$d/conf/accounts"
  : >"$d/conf/contacts"
  timeout $((to + 10)) baresip -4 -f "$d/conf" -t "$to" "$@" </dev/null >"$d/baresip.log" 2>&1 &
  bs_pid=$!
  pids+=("$bs_pid")
}

sox -n -r 8000 -c 1 -b 16 agent.wav synth 30 sine "$AGENT_HZ" vol 0.5
sox -n -r 8000 -c 1 -b 16 customer.wav synth 30 sine "$CUSTOMER_HZ" vol 0.5

# ---- 6a: baresip is the agent's phone
d_c="$(peer_dir bs-customer customer.ulaw)"
peer bs-customer "$d_c" 60 -sf "$scen/dir_uas_customer.xml" -i "$TRUNK" -mi "$TRUNK" -p 5181 -mp 49130 -m 1 -timeout 50s
p_c=$peer_pid
sleep 0.5
# 12 s: customer answers after ~0.5 s, 2 s announcement, then ~9 s bridged
baresip_start agent "$AGENTS:5187" 49200-49299 "$work/agent.wav" "sip:1002@$AGENTS:5187" 12 \
  -e "/dial sip:07700900124@$GW"
b_a=$bs_pid
sipp_verdict "6a. SIPp customer of baresip's call" "$p_c" "$d_c" 40 || true
wait "$b_a" 2>/dev/null || true
ruser="$(sed -n 's/.*ruri-user=\([^ ]*\).*/\1/p' "$d_c"/*_logs.log 2>/dev/null | head -n 1 || true)"
[[ $ruser == 07700900124 ]] && ok "6a. customer's request-URI user is baresip's dialled 07700900124" \
  || bad "6a. customer's request-URI user '$ruser' (want 07700900124); baresip log: $(grep -E 'call:|terminated|error' "$work/baresip-agent/baresip.log" | tail -n 3 | tr '\n' ' ')"
r="$(row '.dialled == "07700900124"')"
echo "row: $r"
jqcheck "6a" "$r" '.direction == "outbound" and .customer_leg == "called" and .hangup_cause == "normal"' \
  "baresip agent: direction outbound, customer_leg called, normal hangup"
jqcheck "6a" "$r" '.recording_state == "ok" and .announcement_state == "played" and .bridged_at_ms >= .announcement_ended_at_ms - 20' \
  "recorded, announcement played before the bridge"
recording_ok "6a.baresip-agent" "$(jq -r '.recording_id // empty' <<<"${r:-null}")"
snap
w="$(wire "$TRUNK" 49130 "$(jq -r '.bridged_at_ms // empty' <<<"${r:-null}")")"; echo "wire to customer: $w"
jqcheck "6a" "$w" '.before.tones["1000"] >= 15 and .after.tones["660"] >= 20' \
  "customer hears the announcement, then baresip's 660 Hz"

# ---- 6b: baresip is the customer
baresip_start customer "$TRUNK:5189" 49300-49399 "$work/customer.wav" "sip:07800900125@$TRUNK:5189" 40
b_c=$bs_pid
sleep 2
kill -0 "$b_c" 2>/dev/null || bad "6b. baresip (customer) did not start: $(tail -n 3 "$work/baresip-customer/baresip.log")"
d_a="$(peer_dir bs-agent agent.ulaw)"
peer bs-agent "$d_a" 60 -sf "$scen/dir_uac_talk.xml" -s 07800900125 "$GW" -i "$AGENTS" -mi "$AGENTS" -p 5198 -mp 49140 \
  -m 1 -d 6000 -key caller 1003 -cid_str "dir-bscust-%u@%s" -timeout 50s
sipp_verdict "6b. SIPp agent calling baresip" "$peer_pid" "$d_a" 60 || true
sleep 1
kill "$b_c" 2>/dev/null || true
wait "$b_c" 2>/dev/null || true
r="$(row "$(by_cid dir-bscust-1)")"
echo "row: $r"
jqcheck "6b" "$r" '.direction == "outbound" and .customer_leg == "called" and .hangup_cause == "normal"
                   and .target == "sip:127.0.0.2:5189"' "baresip customer: direction outbound via route 0780*, normal hangup"
jqcheck "6b" "$r" '.recording_state == "ok" and .announcement_state == "played" and .bridged_at_ms >= .announcement_ended_at_ms - 20' \
  "recorded, announcement played before the bridge"
recording_ok "6b.baresip-customer" "$(jq -r '.recording_id // empty' <<<"${r:-null}")"
snap
w="$(wire "$TRUNK" 49300-49399 "$(jq -r '.bridged_at_ms // empty' <<<"${r:-null}")")"; echo "wire to baresip: $w"
jqcheck "6b" "$w" '.before.tones["1000"] >= 15 and .before.tones["660"] == 0 and .after.tones["660"] >= 20' \
  "baresip (customer) gets the announcement before the bridge, the agent's 660 Hz after"

#!/usr/bin/env bash
# OPTIONAL (INTEROP_BARESIP=1): one call where the agent is baresip instead of SIPp.
# baresip (Debian 1.0.0) auto-answers on 127.0.0.1:AGENT_PORT and plays agent.wav
# via its aufile module; a SIPp uac_talk caller dials NUMBER through the gateway.
#   baresip_agent.sh WORK_DIR SCENARIO_DIR TARGET(host:port) NUMBER AGENT_PORT TALK_MS
# Exit 0 when the SIPp caller completed its call (baresip answered and the
# dialog ended cleanly). Logs: WORK_DIR/baresip/.
set -euo pipefail
work=$1 scen=$2 target=$3 number=$4 aport=$5 talk_ms=$6
d="$work/baresip"
mkdir -p "$d/conf"
timeout 30 sox -n -r 8000 -c 1 -b 16 "$d/agent.wav" synth 10 sine 660 vol 0.5
timeout 30 sox -n -r 8000 -c 1 -e mu-law -t raw "$d/caller.ulaw" synth 4 sine 440 vol 0.5
cat >"$d/conf/config" <<CFG
poll_method		epoll
sip_listen		127.0.0.1:$aport
audio_path		$d
audio_player		aufile,$d/heard.wav
audio_source		aufile,$d/agent.wav
audio_alert		aufile,$d/agent.wav
rtp_ports		47000-47999
module_path		/usr/lib/baresip/modules
module			g711.so
module			aufile.so
module_app		account.so
module_app		menu.so
CFG
echo "<sip:agent@127.0.0.1:$aport>;regint=0;answermode=auto;audio_codecs=PCMU/8000/1,PCMA/8000/1" >"$d/conf/accounts"
: >"$d/conf/contacts"
pid=""
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
timeout 120 baresip -4 -f "$d/conf" -t 110 </dev/null >"$d/baresip.log" 2>&1 &
pid=$!
sleep 2
kill -0 "$pid" 2>/dev/null || { echo "baresip did not start:"; tail -n 20 "$d/baresip.log"; exit 1; }
rc=0
(cd "$d" && timeout 90 sipp -sf "$scen/uac_talk.xml" -s "$number" "$target" -i 127.0.0.1 -p 5096 -mi 127.0.0.1 \
    -mp 46900 -m 1 -d "$talk_ms" -timeout 80s -timeout_error -nostdin -max_retrans 5 \
    -trace_err -trace_msg >"$d/sipp.out" 2>&1) || rc=$?
echo "baresip agent: SIPp caller exit $rc"
(( rc == 0 ))

#!/usr/bin/env python3
"""Check a decrypted recording: stereo, 8 kHz, 16-bit; the left (caller) track
carries the caller's tone and the right (agent) track the agent's tone.

  wav_tones.py FILE.wav CALLER_HZ AGENT_HZ
Exit 0 when each channel's own tone is clearly stronger than the other's.
"""
import math
import struct
import sys
import wave


def goertzel(samples, rate, freq):
    k = 2.0 * math.cos(2.0 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    return s1 * s1 + s2 * s2 - k * s1 * s2


def main():
    path, f_caller, f_agent = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    with wave.open(path, "rb") as w:
        ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        print(f"wav: {ch} ch, {rate} Hz, {8 * width} bit, {n / rate:.1f} s")
        if (ch, width, rate) != (2, 2, 8000):
            print("FAIL: want stereo PCM16 8 kHz")
            return 1
        frames = w.readframes(n)
    data = struct.unpack("<%dh" % (len(frames) // 2), frames)
    left, right = data[0::2], data[1::2]
    ok = True
    for name, chan, own, other in (("left/caller", left, f_caller, f_agent),
                                   ("right/agent", right, f_agent, f_caller)):
        # Energy is measured over 1 s windows; the channel passes if some window
        # has its own tone dominant (announcement and gaps make others quiet).
        best = 0.0
        for start in range(0, max(1, len(chan) - 8000), 4000):
            win = chan[start:start + 8000]
            e_own, e_other = goertzel(win, 8000, own), goertzel(win, 8000, other)
            if e_own > 1e6:
                best = max(best, e_own / (e_other + 1.0))
        good = best > 10.0
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} {name}: {own:.0f} Hz over {other:.0f} Hz, best ratio {best:.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

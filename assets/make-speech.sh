#!/usr/bin/env bash
# Makes the speech samples of assets/README.md with espeak-ng and sox (both deterministic:
# the same versions give the same bytes).
#
#   assets/make-speech.sh assets       # the three committed samples (speech-*.wav)
#   assets/make-speech.sh --held-out D # the held-out sample the playout bench scores, into D
#
# Every sample: synthetic speech (no third-party recording), sentences separated by
# 0.7-0.9 s pauses (SSML breaks) so voice activation and the jitter buffer see talk spurts,
# 48 kHz mono 16-bit, peak at -3 dBFS, 250 ms of silence at both ends.
set -euo pipefail

# voice, rate (words/min), pitch, output name, SSML text
make() {
  local voice=$1 rate=$2 pitch=$3 out=$4 text=$5 raw
  raw=$(mktemp --suffix=.wav)
  espeak-ng -m -v "$voice" -s "$rate" -p "$pitch" -w "$raw" "<speak>$text</speak>"
  sox -R "$raw" -r 48000 -c 1 -b 16 "$out" gain -6 rate -v gain -n -3 pad 0.25 0.25
  rm -f "$raw"
}

if [ "${1:-}" = "--held-out" ]; then
  dir=${2:?usage: make-speech.sh --held-out DIR}
  mkdir -p "$dir"
  make en-gb-scotland+f2 165 45 "$dir/held-out-en-sc-f.wav" \
    'Right, so the train was late again this morning.<break time="800ms"/> I waited on the platform for nearly forty minutes, with no news at all.<break time="700ms"/> When it finally came, it was packed.<break time="900ms"/> Next week I am taking the bicycle instead.'
  exit 0
fi

dir=${1:?usage: make-speech.sh DIR | --held-out DIR}
make en-us 170 50 "$dir/speech-en-us-m.wav" \
  'Good morning, everyone. Thanks for joining the call today.<break time="700ms"/> Before we start, can you all hear me clearly?<break time="900ms"/> The first item is the release schedule. We moved the freeze to Thursday, so the testers get two more days.'
make en-gb+f3 165 60 "$dir/speech-en-gb-f.wav" \
  'Hello, it is Anna from the north office.<break time="800ms"/> The weather here has been dreadful all week, rain and wind every single afternoon.<break time="700ms"/> I will send the figures after lunch.<break time="900ms"/> Could someone check page four, please?'
make de+m3 160 50 "$dir/speech-de-m.wav" \
  'Guten Tag, hier spricht Thomas aus Berlin.<break time="800ms"/> Die Verbindung ist heute erstaunlich gut.<break time="700ms"/> Wir treffen uns morgen um halb zehn im großen Saal.<break time="900ms"/> Bitte bringt eure Unterlagen mit, damit wir pünktlich anfangen können.'

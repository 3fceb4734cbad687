#!/usr/bin/env bash
# Prints the interop matrix recorded by the tests (tests/common/matrix.rs): one row per
# client, one column per role. A cell no test recorded prints "not run"; "n/a" marks a role
# the client does not have (FFmpeg 8 and simple-whip-client only publish).
# Exit status: 0 when every expected cell passed, 1 otherwise.
cd "$(dirname "$0")/../.."
dir="${1:-target/tmp/interop-matrix}"
clients="chromium ffmpeg gstreamer simple-whip-client libdatachannel aiortc pion mixcast"
status=0
printf '\n== interop matrix (%s)\n' "$dir"
printf '%-20s | %-48s | %-48s\n' client publisher viewer
printf '%s\n' "---------------------+--------------------------------------------------+-------------------------------------------------"
for c in $clients; do
    row=()
    for r in publisher viewer; do
        if { [ "$c" = ffmpeg ] || [ "$c" = simple-whip-client ]; } && [ "$r" = viewer ]; then
            row+=("n/a (publishes only)")
            continue
        fi
        f="$dir/${c}__${r}"
        if [ -f "$f" ]; then
            cell=$(head -c 200 "$f" | tr -d '\n')
            case "$cell" in PASS*) ;; *) status=1 ;; esac
            row+=("${cell:0:48}")
        else
            row+=("not run")
            status=1
        fi
    done
    printf '%-20s | %-48s | %-48s\n' "$c" "${row[0]}" "${row[1]}"
done
exit $status

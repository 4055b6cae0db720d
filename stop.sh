#!/usr/bin/env bash
# Stops the nodes ./startup.sh started for a config: SIGTERM (each node tells
# its peers it is leaving and drains its clients), then SIGKILL for any still
# running after 10 s. Usage: ./stop.sh [config.ini]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
config=$(realpath "${1:-$here/config.ini}")
run="$(dirname "$config")/run"

shopt -s nullglob
pidfiles=("$run"/node*.pid)
if [ ${#pidfiles[@]} -eq 0 ]; then
    echo "no running nodes recorded in $run"
    exit 0
fi
# Whether process $1 runs: a zombie (killed, and not yet reaped by an init
# that does not reap, as in some containers) does not.
running() {
    kill -0 "$1" 2>/dev/null || return 1
    [ ! -r "/proc/$1/stat" ] || [ "$(awk '{print $3}' "/proc/$1/stat")" != Z ]
}

for pidfile in "${pidfiles[@]}"; do
    kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
done
for pidfile in "${pidfiles[@]}"; do
    pid=$(cat "$pidfile")
    for _ in $(seq 100); do
        running "$pid" || break
        sleep 0.1
    done
    if running "$pid"; then
        echo "pid $pid ignored SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    echo "stopped $(basename "$pidfile" .pid) (pid $pid)"
done

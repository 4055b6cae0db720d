#!/usr/bin/env bash
# Starts every node of a cluster config in the background and waits until each
# accepts clients. Usage: ./startup.sh [config.ini]
#
# Nodes run in the config file's directory (so its relative log_file and
# data_dir paths are relative to it) and write their pids to run/node<N>.pid
# there, which ./stop.sh reads. The binary is target/release/mckv (built if
# missing) or $MCKV_BIN. With kv_type = memcache, start the memcached
# backends first: docker compose --profile memcache up -d memcached0 memcached1
# memcached2 (see docker-compose.yml).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
config=$(realpath "${1:-$here/config.ini}")
dir=$(dirname "$config")
bin=${MCKV_BIN:-$here/target/release/mckv}
run="$dir/run"

if [ ! -x "$bin" ]; then
    echo "building $bin"
    (cd "$here" && cargo build --release --quiet)
fi
mkdir -p "$run"

# "<id> <client host:port>" for each [node.N] section.
nodes=$(awk '
    /^\[node\.[0-9]+\]/ { id = substr($0, 7, index($0, "]") - 7); next }
    /^\[/ { id = "" }
    id != "" && $1 == "client" { print id, $3 }
' "$config")
if [ -z "$nodes" ]; then
    echo "no [node.N] section with a client address in $config" >&2
    exit 2
fi

# Whether process $1 runs: a zombie (killed, and not yet reaped by an init
# that does not reap, as in some containers) does not.
running() {
    kill -0 "$1" 2>/dev/null || return 1
    [ ! -r "/proc/$1/stat" ] || [ "$(awk '{print $3}' "/proc/$1/stat")" != Z ]
}

while read -r id client; do
    pidfile="$run/node$id.pid"
    if [ -f "$pidfile" ] && running "$(cat "$pidfile")"; then
        echo "node $id already running (pid $(cat "$pidfile"))"
        continue
    fi
    (cd "$dir" && exec "$bin" server --config "$config" --node "$id" >>"$run/node$id.out" 2>&1) &
    echo $! >"$pidfile"
    echo "node $id starting (pid $!), clients on $client"
done <<<"$nodes"

# Wait (at most 15 s) until every node accepts client connections.
deadline=$((SECONDS + 15))
while read -r id client; do
    host=${client%:*}
    port=${client##*:}
    until (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
        if ! running "$(cat "$run/node$id.pid")"; then
            echo "node $id exited; see $run/node$id.out" >&2
            exit 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            echo "node $id does not accept clients on $client" >&2
            exit 1
        fi
        sleep 0.1
    done
done <<<"$nodes"

# Then until every node sees every other one up (each `show` line says "up").
count=$(wc -l <<<"$nodes")
while read -r id client; do
    until [ "$(printf 'show\n' | "$bin" client --host "${client%:*}" --port "${client##*:}" 2>/dev/null |
        grep -c '^NODE [0-9]* [^ ]* up ')" -eq "$count" ]; do
        if [ $SECONDS -ge $deadline ]; then
            echo "node $id does not see the whole cluster up; see $run/node$id.out" >&2
            exit 1
        fi
        sleep 0.1
    done
done <<<"$nodes"
echo "cluster up: $count nodes"

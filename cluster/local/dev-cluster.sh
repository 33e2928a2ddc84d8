#!/usr/bin/env bash
# A multi-node Ray cluster on one machine: a head plus N worker nodes, each a separate `ray start`.
#
# Why: Ray Train, Ray Data and the job DAG behave differently once tasks land on more than one node
# (object transfer, placement groups, node failures); this reproduces that on a laptop or CI box.
#
# It never touches another Ray instance on the machine: every node has its own --temp-dir under --dir,
# the head's ports are explicit, every other port is picked free by the OS (0), and `down` stops only
# the processes this script started and their descendants (never `ray stop`, which stops every Ray on
# the machine).
#
#   cluster/local/dev-cluster.sh up     [--workers 2] [--head-cpus 1] [--worker-cpus 2] [--worker-gpus 0]
#   cluster/local/dev-cluster.sh status
#   cluster/local/dev-cluster.sh down
#
# Common options: --dir DIR (state, logs and temp dirs; keep it short: Ray's unix sockets live under it),
# --port GCS_PORT, --dashboard-port PORT, --client-port PORT, --object-store-mb MB, --ray RAY_EXECUTABLE,
# --timeout SECONDS. Each option can also come from the environment variable named in usage().
set -euo pipefail

usage() {
    cat <<'EOF'
usage: dev-cluster.sh up|down|status [options]

  up       start a head and --workers worker nodes, wait until all of them are alive
  status   print the nodes' process ids, the addresses and `ray status`
  down     stop the nodes this script started under --dir (and only those)

options (environment variable in brackets, then default):
  --dir DIR             [LLAVAST_DEV_DIR]          /tmp/llavast-dev-$USER
  --workers N           [LLAVAST_DEV_WORKERS]      2
  --head-cpus N         [LLAVAST_DEV_HEAD_CPUS]    1
  --worker-cpus N       [LLAVAST_DEV_WORKER_CPUS]  2
  --worker-gpus N       [LLAVAST_DEV_WORKER_GPUS]  0   (logical GPUs: lets GPU-shaped jobs schedule)
  --port PORT           [LLAVAST_DEV_PORT]         6390  (GCS, on every interface; token-protected)
  --dashboard-port PORT [LLAVAST_DEV_DASHBOARD_PORT] 8275 (bound to 127.0.0.1 only)
  --client-port PORT    [LLAVAST_DEV_CLIENT_PORT]  10091 (Ray client server, ray://127.0.0.1:PORT;
                                                   started only where ray[client] is installed)
  --object-store-mb MB  [LLAVAST_DEV_OBJECT_STORE_MB] 256 per node
  --ray PATH            [RAY]                      `ray` on PATH
  --timeout SECONDS     [LLAVAST_DEV_TIMEOUT]      90  (how long `up` waits for the nodes)
EOF
}

die() { echo "dev-cluster: $*" >&2; exit 1; }

# ---- options ------------------------------------------------------------------------------------
cmd="${1:-}"
case "$cmd" in
    up|down|status) shift ;;
    -h|--help|help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac

dir="${LLAVAST_DEV_DIR:-/tmp/llavast-dev-${USER:-$(id -u)}}"
workers="${LLAVAST_DEV_WORKERS:-2}"
head_cpus="${LLAVAST_DEV_HEAD_CPUS:-1}"
worker_cpus="${LLAVAST_DEV_WORKER_CPUS:-2}"
worker_gpus="${LLAVAST_DEV_WORKER_GPUS:-0}"
port="${LLAVAST_DEV_PORT:-6390}"
dashboard_port="${LLAVAST_DEV_DASHBOARD_PORT:-8275}"
client_port="${LLAVAST_DEV_CLIENT_PORT:-10091}"
object_store_mb="${LLAVAST_DEV_OBJECT_STORE_MB:-256}"
ray_bin="${RAY:-ray}"
timeout_s="${LLAVAST_DEV_TIMEOUT:-90}"

while [[ $# -gt 0 ]]; do
    [[ $# -ge 2 ]] || die "option $1 needs a value (see --help)"
    case "$1" in
        --dir) dir="$2" ;;
        --workers) workers="$2" ;;
        --head-cpus) head_cpus="$2" ;;
        --worker-cpus) worker_cpus="$2" ;;
        --worker-gpus) worker_gpus="$2" ;;
        --port) port="$2" ;;
        --dashboard-port) dashboard_port="$2" ;;
        --client-port) client_port="$2" ;;
        --object-store-mb) object_store_mb="$2" ;;
        --ray) ray_bin="$2" ;;
        --timeout) timeout_s="$2" ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift 2
done

for name in workers head_cpus worker_cpus worker_gpus port dashboard_port client_port object_store_mb timeout_s; do
    [[ "${!name}" =~ ^[0-9]+$ ]] || die "--${name//_/-} must be a non-negative integer, got '${!name}'"
done
command -v "$ray_bin" >/dev/null || die "ray executable '$ray_bin' not found: pass --ray PATH or set RAY"
ray_dir="$(cd "$(dirname "$(command -v "$ray_bin")")" && pwd)"
# The Python that runs `ray` (its console script's interpreter line), for quick checks without the CLI.
ray_python="$(head -n 1 "$(command -v "$ray_bin")" | sed -n 's/^#!//p')"
ray_python="${ray_python:-python3}"
dir="$(mkdir -p "$dir" && cd "$dir" && pwd)"
# Unix socket paths are limited to 107 bytes; Ray adds up to about 75 bytes below --dir.
(( ${#dir} <= 32 )) || die "--dir '$dir' is too long for Ray's unix sockets: use a path of 32 characters or less"

# Ray 2.60 turns token authentication on when a token is around. The cluster gets its own token under
# --dir, so it neither reads nor writes ~/.ray and every command here (and every client that sources
# DIR/env) presents the same one.
unset RAY_AUTH_TOKEN
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$dir/auth_token"

# ---- helpers --------------------------------------------------------------------------------------
# Each node runs `ray start --block` as the leader of its own session: the node's pid is also the
# process-group id of Ray's daemons on that node (its worker processes get groups of their own).
node_names() {  # the nodes with a pid file under --dir: head, worker-1, ...
    local f
    for f in "$dir"/*.pid; do if [[ -e "$f" ]]; then basename "$f" .pid; fi; done
}
node_pid() { cat "$dir/$1.pid"; }
group_alive() { kill -0 -- "-$1" 2>/dev/null; }

start_node() {  # start_node NAME ARGS...: one `ray start --block` in a new session, logs to DIR/NAME.log
    local name="$1"; shift
    # No drain on SIGTERM: a dev node has nothing to hand over, and `down` should take seconds, not 30.
    # PATH starts with ray's own bin dir: job entrypoints (`python`, `llavast`) find the same environment.
    PATH="$ray_dir:$PATH" RAY_USAGE_STATS_ENABLED=0 RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0 \
    setsid "$ray_bin" start --block --disable-usage-stats --temp-dir="$dir/$name" \
        --object-store-memory=$((object_store_mb * 1024 * 1024)) \
        --node-manager-port=0 --object-manager-port=0 --metrics-export-port=0 \
        --dashboard-agent-listen-port=0 --dashboard-agent-grpc-port=0 --runtime-env-agent-port=0 \
        --min-worker-port=0 --max-worker-port=0 \
        "$@" >"$dir/$name.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/$name.pid"
    # setsid execs in place when its caller is not a group leader (always so in a script): check it.
    local pgid; pgid="$(ps -o pgid= -p "$pid" | tr -d ' ')"
    # (An empty pgid means it already exited: wait_for_nodes reports that with the node's log.)
    [[ -z "$pgid" || "$pgid" == "$pid" ]] || die "node $name (pid $pid) is not in its own process group ($pgid)"
}

client_available() {  # Ray starts a client server only where ray[client] is installed; else the flag fails
    # shellcheck disable=SC2086 # the interpreter line may be "/usr/bin/env python3": split it
    $ray_python -c 'import sys; from ray._private.utils import get_ray_client_dependency_error as e
sys.exit(e() is not None)' 2>/dev/null
}

alive_nodes() {  # number of alive nodes, from the dashboard's state API (0 while it is not up yet)
    # Plain urllib, not `ray list nodes`: a poll then costs milliseconds instead of a Ray CLI import.
    # shellcheck disable=SC2086 # the interpreter line may be "/usr/bin/env python3": split it
    $ray_python - "$dashboard_port" "$RAY_AUTH_TOKEN_PATH" 2>/dev/null <<'EOF' || echo 0
import json, pathlib, sys, urllib.request
port, token_path = sys.argv[1], pathlib.Path(sys.argv[2])
url = f"http://127.0.0.1:{port}/api/v0/nodes?limit=1000&filter_keys=state&filter_predicates=%3D&filter_values=ALIVE"
request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token_path.read_text().strip()}"})
print(len(json.load(urllib.request.urlopen(request, timeout=5))["data"]["result"]["result"]))
EOF
}

wait_for_nodes() {  # wait_for_nodes N: until N nodes are alive, or fail with the logs' tails
    local want="$1" deadline=$((SECONDS + timeout_s)) name have
    while (( SECONDS < deadline )); do
        for name in $(node_names); do
            if ! group_alive "$(node_pid "$name")"; then
                tail -n 30 "$dir/$name.log" >&2
                stop_all
                die "node $name exited during start (log above: $dir/$name.log)"
            fi
        done
        have="$(alive_nodes)"
        [[ "${have:-0}" -ge "$want" ]] && return 0
        sleep 1
    done
    for name in $(node_names); do echo "--- $dir/$name.log" >&2; tail -n 15 "$dir/$name.log" >&2; done
    stop_all
    die "only ${have:-0} of $want nodes came up within ${timeout_s}s; stopped them again"
}

wait_for_file() {  # wait_for_file PATH: Ray writes some files only after the node reports alive
    local deadline=$((SECONDS + timeout_s))
    until [[ -s "$1" ]]; do
        (( SECONDS < deadline )) || { stop_all; die "$1 did not appear within ${timeout_s}s; stopped the nodes"; }
        sleep 1
    done
}

descendants() {  # descendants PID: "pid:starttime" of every process below PID
    local p
    for p in $(ps -e -o pid= -o ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END { for (p in parent) { q = p; while (q in parent && q != root && q > 1) q = parent[q]
                                  if (q == root && p != root) print p } }'); do
        echo "$p:$(start_time "$p")"
    done
}

start_time() {  # start_time PID: the kernel's start time of PID (field 22 of /proc/PID/stat), or nothing
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    stat="${stat##*) }"   # drop "pid (comm) ": comm may contain spaces
    echo "$stat" | cut -d' ' -f20
}

kill_recorded() {  # kill_recorded "pid:starttime"...: SIGKILL those still alive, never a reused pid
    local entry
    for entry in "$@"; do
        if [[ "$(start_time "${entry%%:*}")" == "${entry#*:}" ]]; then kill -KILL "${entry%%:*}" 2>/dev/null || true; fi
    done
    return 0
}

stop_all() {  # workers first, then the head: SIGTERM to the node's `ray start`, a grace period, SIGKILL
    local name pid deadline tree
    for name in $(node_names | sort -r); do   # "worker-*" sorts after "head": reversed, the workers go first
        pid="$(node_pid "$name")"
        tree="$(descendants "$pid")"   # taken before the signal: orphans are re-parented away from $pid
        # `ray start --block` stops its own processes on SIGTERM; what lingers gets SIGKILL by pid.
        if group_alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
        deadline=$((SECONDS + 20))
        while group_alive "$pid" && (( SECONDS < deadline )); do sleep 0.5; done
        if group_alive "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
        # shellcheck disable=SC2086 # $tree: one pid:starttime per word
        kill_recorded $tree
        rm -f "$dir/$name.pid"
    done
    return 0
}

# ---- commands -----------------------------------------------------------------------------------
case "$cmd" in
    up)
        for name in $(node_names); do
            group_alive "$(node_pid "$name")" && die "a dev cluster is already running under $dir: run 'down' first"
            rm -f "$dir/$name.pid"
        done
        if [[ ! -s "$RAY_AUTH_TOKEN_PATH" ]]; then
            (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$RAY_AUTH_TOKEN_PATH")
        fi
        head_args=(--num-cpus="$head_cpus" --num-gpus=0 --resources='{"dev_head": 1}')
        if client_available; then head_args+=(--ray-client-server-port="$client_port"); fi
        start_node head --head --port="$port" --include-dashboard=true \
            --dashboard-host=127.0.0.1 --dashboard-port="$dashboard_port" "${head_args[@]}"
        wait_for_nodes 1
        # The GCS listens on every interface; Ray names it by the node's IP, which workers must use too.
        wait_for_file "$dir/head/ray_current_cluster"
        address="$(cat "$dir/head/ray_current_cluster")"
        for ((i = 1; i <= workers; i++)); do
            start_node "worker-$i" --address="$address" \
                --num-cpus="$worker_cpus" --num-gpus="$worker_gpus" --resources="{\"dev_worker_$i\": 1}"
        done
        wait_for_nodes $((workers + 1))
        cat >"$dir/env" <<EOF
export RAY_ADDRESS=$address
export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$dashboard_port
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH
EOF
        echo "dev cluster up: 1 head + $workers worker nodes"
        echo "  address    $address   (ray.init(address=...), after: source $dir/env)"
        echo "  dashboard  http://127.0.0.1:$dashboard_port   (ray job submit, after: source $dir/env)"
        echo "  logs       $dir/*.log"
        ;;
    status)
        names="$(node_names)"
        [[ -n "$names" ]] || die "no dev cluster under $dir"
        for name in $names; do
            pid="$(node_pid "$name")"
            if group_alive "$pid"; then state=running; else state=dead; fi
            printf '%-10s pid %-8s %s\n' "$name" "$pid" "$state"
        done
        address="$(cat "$dir/head/ray_current_cluster" 2>/dev/null || echo "127.0.0.1:$port")"
        echo "address $address   dashboard http://127.0.0.1:$dashboard_port   env $dir/env"
        "$ray_bin" status --address="$address"
        ;;
    down)
        stop_all
        rm -f "$dir/env"
        echo "dev cluster under $dir stopped"
        ;;
esac

#!/usr/bin/env bash
# Start, inspect or stop a Dask scheduler and workers on one host.
#
# The workers get the same flags as the worker pods in deploy/kubernetes/ (one thread per
# worker, an explicit memory limit, a death timeout and an HTTP port serving /health), so a
# job that runs here runs the same way on the cluster.
#
# Usage:
#   deploy/local/start-cluster.sh start  [options]   # start in the background, print address
#   deploy/local/start-cluster.sh status [options]   # list scheduler and worker processes
#   deploy/local/start-cluster.sh stop   [options]   # stop workers, then the scheduler
#   deploy/local/start-cluster.sh flags  [options]   # print the worker flags and exit
#
# Options (each also read from the environment variable in brackets):
#   --host HOST              interface the scheduler, workers, nannies and dashboards
#                            listen on                     [AMPOFFSET_HOST, 127.0.0.1]
#   --port PORT              scheduler port                [AMPOFFSET_PORT, 8786]
#   --dashboard-port PORT    scheduler HTTP port           [AMPOFFSET_DASHBOARD_PORT, 8787]
#   --workers N              number of worker processes    [AMPOFFSET_WORKERS, 2]
#   --memory-limit SIZE      memory limit per worker       [AMPOFFSET_MEMORY_LIMIT, 2GiB]
#   --run-dir DIR            pid files, logs, scratch      [AMPOFFSET_RUN_DIR,
#                                                           ${TMPDIR:-/tmp}/ampoffset-cluster-PORT]
#   --timeout SECONDS        wait for start/stop           [AMPOFFSET_TIMEOUT, 60]
#   --no-dashboard           no bokeh dashboard pages on the scheduler and workers; their
#                            HTTP servers (/health) still run, and each process starts
#                            with ~1 s less CPU             [AMPOFFSET_NO_DASHBOARD=1]
#
# Then run a job against it:
#   ampoffset-dask run INPUT --output CATALOG --scheduler tcp://127.0.0.1:8786
# or use the scheduler file: --scheduler RUN_DIR/scheduler.json
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

ACTION="${1:-}"
if [[ -z "$ACTION" || "$ACTION" == "-h" || "$ACTION" == "--help" ]]; then
    usage
    exit 0
fi
shift

HOST="${AMPOFFSET_HOST:-127.0.0.1}"
PORT="${AMPOFFSET_PORT:-8786}"
DASHBOARD_PORT="${AMPOFFSET_DASHBOARD_PORT:-8787}"
WORKERS="${AMPOFFSET_WORKERS:-2}"
MEMORY_LIMIT="${AMPOFFSET_MEMORY_LIMIT:-2GiB}"
RUN_DIR="${AMPOFFSET_RUN_DIR:-}"
TIMEOUT="${AMPOFFSET_TIMEOUT:-60}"
NO_DASHBOARD="${AMPOFFSET_NO_DASHBOARD:-0}"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --host) HOST="$2"; shift 2 ;;
        --port) PORT="$2"; shift 2 ;;
        --dashboard-port) DASHBOARD_PORT="$2"; shift 2 ;;
        --workers) WORKERS="$2"; shift 2 ;;
        --memory-limit) MEMORY_LIMIT="$2"; shift 2 ;;
        --run-dir) RUN_DIR="$2"; shift 2 ;;
        --timeout) TIMEOUT="$2"; shift 2 ;;
        --no-dashboard) NO_DASHBOARD=1; shift ;;
        *) echo "start-cluster.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
RUN_DIR="${RUN_DIR:-${TMPDIR:-/tmp}/ampoffset-cluster-${PORT}}"
ADDRESS="tcp://${HOST}:${PORT}"

# The flags every worker gets, here and in deploy/kubernetes/daskcluster.yaml.
set_worker_flags() {
    WORKER_FLAGS=(
        --name "$1"
        --nthreads 1
        --memory-limit "$MEMORY_LIMIT"
        --death-timeout 60
        --dashboard-address "${HOST}:0"
        --local-directory "$RUN_DIR/scratch"
    )
    [[ "$NO_DASHBOARD" == 1 ]] && WORKER_FLAGS+=(--no-dashboard)
    return 0
}

# Run a command in its own session when setsid exists (Linux), so that signals sent to this
# terminal do not reach the cluster; plain background otherwise (macOS). Called as
# `detach CMD... &`: exec keeps $! the command's own pid.
detach() {
    if command -v setsid >/dev/null 2>&1; then
        exec setsid "$@"
    else
        exec "$@"
    fi
}

find_dask() {
    if ! command -v dask >/dev/null 2>&1; then
        echo "start-cluster.sh: the 'dask' command is not on PATH; install ampoffset-dask" \
             "(pip install ampoffset-dask) or activate its environment" >&2
        exit 1
    fi
    DASK_BIN="$(command -v dask)"
    PYTHON="${PYTHON:-$(dirname "$DASK_BIN")/python}"
    [[ -x "$PYTHON" ]] || PYTHON="python3"
}

is_running() {
    local pidfile="$1"
    [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

wait_for_workers() {
    # Wait until the scheduler reports $WORKERS workers (or fail with the worker logs).
    "$PYTHON" - "$ADDRESS" "$WORKERS" "$TIMEOUT" <<'PY'
import sys
from distributed import Client

address, n, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with Client(address, timeout=timeout) as client:
    client.wait_for_workers(n, timeout=timeout)
    sys.stdout.write(f"{len(client.scheduler_info()['workers'])} workers connected\n")
PY
}

start() {
    find_dask
    mkdir -p "$RUN_DIR/scratch"
    if is_running "$RUN_DIR/scheduler.pid"; then
        echo "start-cluster.sh: a scheduler is already running from $RUN_DIR" \
             "(pid $(cat "$RUN_DIR/scheduler.pid")); stop it first" >&2
        exit 1
    fi
    rm -f "$RUN_DIR"/*.pid "$RUN_DIR/scheduler.json"

    local sched_flags=()
    [[ "$NO_DASHBOARD" == 1 ]] && sched_flags+=(--no-dashboard)
    detach "$DASK_BIN" scheduler \
        --host "$HOST" --port "$PORT" "${sched_flags[@]}" \
        --dashboard-address "${HOST}:${DASHBOARD_PORT}" \
        --scheduler-file "$RUN_DIR/scheduler.json" \
        >"$RUN_DIR/scheduler.log" 2>&1 </dev/null &
    echo $! >"$RUN_DIR/scheduler.pid"

    local waited=0
    until [[ -s "$RUN_DIR/scheduler.json" ]]; do
        if ! is_running "$RUN_DIR/scheduler.pid"; then
            echo "start-cluster.sh: the scheduler exited; its log:" >&2
            cat "$RUN_DIR/scheduler.log" >&2
            exit 1
        fi
        if (( waited >= TIMEOUT * 10 )); then
            echo "start-cluster.sh: no scheduler file after ${TIMEOUT}s" >&2
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done

    local i
    for ((i = 0; i < WORKERS; i++)); do
        set_worker_flags "local-$i"
        # --host binds the worker's and the nanny's comm ports (without it they listen on
        # every interface, where any peer could submit code).
        detach "$DASK_BIN" worker "$ADDRESS" --host "$HOST" "${WORKER_FLAGS[@]}" \
            >"$RUN_DIR/worker-$i.log" 2>&1 </dev/null &
        echo $! >"$RUN_DIR/worker-$i.pid"
    done

    if ! wait_for_workers; then
        echo "start-cluster.sh: workers did not connect; logs are in $RUN_DIR" >&2
        stop
        exit 1
    fi
    echo "scheduler: $ADDRESS"
    if [[ "$NO_DASHBOARD" == 1 ]]; then
        echo "dashboard: none (--no-dashboard); health: http://${HOST}:${DASHBOARD_PORT}/health"
    else
        echo "dashboard: http://${HOST}:${DASHBOARD_PORT}/status"
    fi
    echo "scheduler file: $RUN_DIR/scheduler.json"
    echo "stop with: $0 stop --port $PORT --run-dir $RUN_DIR"
}

wait_pid() {
    # Wait up to TIMEOUT seconds for a signalled process, then SIGKILL it.
    local pidfile="$1" pid waited=0
    [[ -f "$pidfile" ]] || return 0
    pid="$(cat "$pidfile")"
    while kill -0 "$pid" 2>/dev/null; do
        if (( waited >= TIMEOUT * 10 )); then
            echo "start-cluster.sh: pid $pid ignored SIGTERM; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    rm -f "$pidfile"
}

stop() {
    # SIGTERM every worker at once (each closes gracefully), then the scheduler.
    local pidfile
    for pidfile in "$RUN_DIR"/worker-*.pid; do
        [[ -e "$pidfile" ]] && kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
    done
    for pidfile in "$RUN_DIR"/worker-*.pid; do
        [[ -e "$pidfile" ]] && wait_pid "$pidfile"
    done
    if [[ -e "$RUN_DIR/scheduler.pid" ]]; then
        kill -TERM "$(cat "$RUN_DIR/scheduler.pid")" 2>/dev/null || true
        wait_pid "$RUN_DIR/scheduler.pid"
    fi
    rm -f "$RUN_DIR/scheduler.json"
    echo "stopped cluster in $RUN_DIR"
}

status() {
    local pidfile found=0
    for pidfile in "$RUN_DIR"/scheduler.pid "$RUN_DIR"/worker-*.pid; do
        [[ -e "$pidfile" ]] || continue
        found=1
        if is_running "$pidfile"; then
            echo "$(basename "$pidfile" .pid): running (pid $(cat "$pidfile"))"
        else
            echo "$(basename "$pidfile" .pid): not running"
        fi
    done
    if (( found == 0 )); then
        echo "no cluster in $RUN_DIR"
        return 1
    fi
}

case "$ACTION" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    flags) set_worker_flags "local-0"; printf '%s\n' "${WORKER_FLAGS[@]}" ;;
    *) echo "start-cluster.sh: unknown action '$ACTION' (start, stop, status, flags)" >&2; exit 2 ;;
esac

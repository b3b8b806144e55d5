#!/usr/bin/env bash
# Waits until the compose stack in the current directory is ready, or fails with diagnostics.
#
#   docker/wait-ready.sh [--timeout SECS] [service...]
#
# Ready means: the one-shot services (kafka-init, cassandra-migrate) exited 0, and every
# container of each given service (default: producer stream-reader cassandra-writer; all
# replicas when scaled) is running, its Docker health (HEALTHCHECK, /healthz) is "healthy" and
# /readyz answers 200 inside the container. Run it where docker-compose.yml is (or with
# COMPOSE_FILE / COMPOSE_PROJECT_NAME set); the deploy job runs it on the deployment server.
set -euo pipefail

timeout=${READY_TIMEOUT_SECS:-300}
if [[ ${1:-} == --timeout ]]; then
    timeout=${2:?--timeout needs a number of seconds}
    shift 2
fi
services=("$@")
if ((${#services[@]} == 0)); then
    services=(producer stream-reader cassandra-writer)
fi
one_shots=(kafka-init cassandra-migrate)

reason=""

# One-shot services: exited with status 0.
one_shots_done() {
    local svc ids id state code
    for svc in "${one_shots[@]}"; do
        ids=$(docker compose ps --all --quiet "$svc")
        if [[ -z $ids ]]; then
            reason="$svc: no container"
            return 1
        fi
        for id in $ids; do
            state=$(docker inspect --format '{{.State.Status}}' "$id")
            code=$(docker inspect --format '{{.State.ExitCode}}' "$id")
            if [[ $state != exited ]]; then
                reason="$svc: $state"
                return 1
            fi
            if [[ $code != 0 ]]; then
                reason="$svc exited with status $code"
                return 2
            fi
        done
    done
}

# Long-running services: every container running, healthy and ready.
services_ready() {
    local svc ids id state health
    for svc in "${services[@]}"; do
        ids=$(docker compose ps --quiet "$svc")
        if [[ -z $ids ]]; then
            reason="$svc: no running container"
            return 1
        fi
        for id in $ids; do
            state=$(docker inspect --format '{{.State.Status}}' "$id")
            health=$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id")
            if [[ $state != running ]]; then
                reason="$svc (${id:0:12}): $state"
                return 1
            fi
            if [[ $health != healthy ]]; then
                reason="$svc (${id:0:12}): health $health"
                return 1
            fi
            if ! docker exec "$id" healthcheck readyz >/dev/null 2>&1; then
                reason="$svc (${id:0:12}): /readyz not ready"
                return 1
            fi
        done
    done
}

deadline=$((SECONDS + timeout))
echo "waiting up to ${timeout}s for: ${one_shots[*]} (exit 0), ${services[*]} (ready)"
while :; do
    status=0
    one_shots_done || status=$?
    if ((status == 0)); then
        services_ready || status=$?
    fi
    if ((status == 0)); then
        echo "ready: ${services[*]}"
        docker compose ps
        exit 0
    fi
    if ((status == 2 || SECONDS >= deadline)); then
        echo "NOT READY: $reason" >&2
        docker compose ps --all >&2 || true
        for svc in "${one_shots[@]}" "${services[@]}"; do
            echo "--- last log lines of $svc" >&2
            docker compose logs --no-color --tail 40 "$svc" >&2 || true
        done
        exit 1
    fi
    echo "  not yet: $reason"
    sleep 5
done

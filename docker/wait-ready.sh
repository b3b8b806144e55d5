#!/usr/bin/env bash
# Waits until the compose stack is ready, or fails with diagnostics.
#
#   docker/wait-ready.sh [--timeout SECS] [service...]
#
# Services: the given ones, else every one of kafka-init, cassandra-migrate, producer,
# stream-reader and cassandra-writer that the active profiles enable (`docker compose config
# --services`). Ready means, for every container of each (all replicas of a scaled service):
#
#   kafka-init, cassandra-migrate   exited with status 0 (one-shot jobs). Another exit status
#                                   fails at once.
#   producer                        exited with status 0 (a finite run, PRODUCER_COUNT or
#                                   PRODUCER_DURATION_SECS, is done), or running and ready as below.
#   stream-reader, cassandra-writer running, Docker health (HEALTHCHECK: /healthz) "healthy", and
#                                   /readyz answering 200 inside the container: connected to
#                                   Kafka and a member of its consumer group, with or without
#                                   partitions (a replica beyond the partition count is a ready
#                                   standby); for the writer also Cassandra reachable and the
#                                   schema verified.
#
# Run it with the compose settings of `up`: in the directory of docker-compose.yml, with the
# same COMPOSE_FILE, COMPOSE_ENV_FILES, COMPOSE_PROFILES (or COMPOSE_PROJECT_NAME) in the
# environment, e.g. for the local setup:
#   COMPOSE_ENV_FILES=docker/local.env COMPOSE_PROFILES=local,demo docker/wait-ready.sh
# The deploy job runs it on the deployment server. Timeout: --timeout, else READY_TIMEOUT_SECS,
# else 300 s.
set -euo pipefail

timeout=${READY_TIMEOUT_SECS:-300}
if [[ ${1:-} == --timeout ]]; then
    timeout=${2:?--timeout needs a number of seconds}
    shift 2
fi
ours=(kafka-init cassandra-migrate producer stream-reader cassandra-writer)
services=("$@")
if ((${#services[@]} == 0)); then
    enabled=$(docker compose config --services)
    for svc in "${ours[@]}"; do
        if grep -qx -- "$svc" <<<"$enabled"; then
            services+=("$svc")
        fi
    done
fi
for svc in "${services[@]}"; do
    if [[ " ${ours[*]} " != *" $svc "* ]]; then
        echo "wait-ready: $svc is not one of: ${ours[*]}" >&2
        exit 2
    fi
done
if ((${#services[@]} == 0)); then
    echo "wait-ready: no service of ours is enabled (check COMPOSE_PROFILES / --profile)" >&2
    exit 2
fi

reason=""

# 0 ready, 1 not yet, 2 failed for good.
container_ready() {
    local svc=$1 id=$2 state code health
    state=$(docker inspect --format '{{.State.Status}}' "$id")
    code=$(docker inspect --format '{{.State.ExitCode}}' "$id")
    case $svc in
        kafka-init | cassandra-migrate)
            if [[ $state == exited && $code == 0 ]]; then
                return 0
            fi
            if [[ $state == exited || $state == dead ]]; then
                reason="$svc exited with status $code"
                return 2
            fi
            reason="$svc: $state"
            return 1
            ;;
        producer)
            if [[ $state == exited && $code == 0 ]]; then
                return 0 # a finite run that is done
            fi
            ;;
    esac
    if [[ $state != running ]]; then
        reason="$svc (${id:0:12}): $state (exit status $code)"
        return 1
    fi
    health=$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id")
    if [[ $health != healthy ]]; then
        reason="$svc (${id:0:12}): health $health"
        return 1
    fi
    if ! docker exec "$id" healthcheck readyz >/dev/null 2>&1; then
        reason="$svc (${id:0:12}): /readyz not ready"
        return 1
    fi
}

# 0 when every container of every service is ready; else the first problem's status.
all_ready() {
    local svc ids id status
    for svc in "${services[@]}"; do
        ids=$(docker compose ps --all --quiet "$svc")
        if [[ -z $ids ]]; then
            reason="$svc: no container"
            return 1
        fi
        for id in $ids; do
            status=0
            container_ready "$svc" "$id" || status=$?
            if ((status != 0)); then
                return "$status"
            fi
        done
    done
}

deadline=$((SECONDS + timeout))
echo "waiting up to ${timeout}s for: ${services[*]}"
while :; do
    status=0
    all_ready || status=$?
    if ((status == 0)); then
        echo "ready: ${services[*]}"
        docker compose ps --all "${services[@]}"
        exit 0
    fi
    if ((status == 2 || SECONDS >= deadline)); then
        echo "NOT READY: $reason" >&2
        docker compose ps --all >&2 || true
        for svc in "${services[@]}"; do
            echo "--- last log lines of $svc" >&2
            docker compose logs --no-color --tail 40 "$svc" >&2 || true
        done
        exit 1
    fi
    echo "  not yet: $reason"
    sleep 5
done

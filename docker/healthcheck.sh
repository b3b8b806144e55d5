#!/bin/sh
# Health probe of the pipeline's service containers (installed as /usr/local/bin/healthcheck).
#
#   healthcheck [healthz|readyz]
#
# GETs http://<METRICS_ADDR>/<endpoint> with a 2 s timeout and exits 0 on a 2xx answer.
# healthz (default) is liveness: the image's HEALTHCHECK uses it. readyz is readiness (Kafka and,
# for cassandra-writer, Cassandra reachable): the deploy job and docker/wait-ready.sh use it.
# A wildcard bind address (0.0.0.0, [::] or none) is probed on 127.0.0.1.
set -eu

endpoint="${1:-healthz}"
case "$endpoint" in
    healthz | readyz) ;;
    *)
        echo "usage: healthcheck [healthz|readyz]" >&2
        exit 2
        ;;
esac

addr="${METRICS_ADDR:-}"
if [ -z "$addr" ]; then
    echo "healthcheck: METRICS_ADDR is not set" >&2
    exit 2
fi
port="${addr##*:}"
host="${addr%:*}"
case "$host" in
    "" | "$addr" | 0.0.0.0 | "[::]" | "*") host=127.0.0.1 ;;
esac

exec curl --fail --silent --show-error --max-time 2 --output /dev/null \
    "http://${host}:${port}/${endpoint}"

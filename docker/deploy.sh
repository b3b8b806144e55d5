#!/usr/bin/env bash
# Deploys the stack to $DEPLOYMENT_SERVER over SSH (the GitLab `deploy` job runs this).
#
# 1. copies to $DEPLOY_PATH: docker-compose.yml, docker/wait-ready.sh, the monitoring
#    configuration (docker/prometheus.yml, docker/grafana/) and a deploy.env (mode 0600) with
#    IMAGE_TAG, DOCKER_REGISTRY_URL and every pipeline setting set in the CI environment
#    (KAFKA_*, CASSANDRA_*, PRODUCER_*, READER_*, WRITER_*, ALERT_*, ...);
# 2. logs the server in to the registry (password through stdin, never on a command line);
# 3. runs `docker compose pull` and `docker compose up -d --no-build --remove-orphans`;
# 4. runs docker/wait-ready.sh there: fails unless every service is ready in time.
#
# Required: DEPLOYMENT_SERVER (user@host), SSH_PRIVATE_KEY (a "File" CI variable, or the key
# itself), SSH_KNOWN_HOSTS (the server's host keys: `ssh-keyscan -p PORT HOST`, a "File" variable
# or the text), IMAGE_TAG, DOCKER_REGISTRY_URL.
# Optional: DEPLOYMENT_SSH_PORT (22), DEPLOY_PATH (/opt/ip-log-pipeline), READY_TIMEOUT_SECS
# (300), REGISTRY_USER / REGISTRY_PASSWORD (default: the job's CI_REGISTRY_USER/PASSWORD, valid
# for the job's lifetime only: the server logs out at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${DEPLOYMENT_SERVER:?set DEPLOYMENT_SERVER (user@host) in Settings > CI/CD > Variables}"
: "${SSH_PRIVATE_KEY:?set SSH_PRIVATE_KEY (a File variable holding the deploy key)}"
: "${SSH_KNOWN_HOSTS:?set SSH_KNOWN_HOSTS (output of ssh-keyscan for the deployment server)}"
: "${IMAGE_TAG:?IMAGE_TAG is not set}"
: "${DOCKER_REGISTRY_URL:?DOCKER_REGISTRY_URL is not set}"
port=${DEPLOYMENT_SSH_PORT:-22}
path=${DEPLOY_PATH:-/opt/ip-log-pipeline}
ready_timeout=${READY_TIMEOUT_SECS:-300}
registry_host=${DOCKER_REGISTRY_URL%%/*}
registry_user=${REGISTRY_USER:-${CI_REGISTRY_USER:-}}
registry_password=${REGISTRY_PASSWORD:-${CI_REGISTRY_PASSWORD:-}}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

# SSH: the key and the pinned host keys, from File variables (paths) or their content.
if [[ -f $SSH_PRIVATE_KEY ]]; then
    tr -d '\r' <"$SSH_PRIVATE_KEY" >"$work/id"
    printf '\n' >>"$work/id" # OpenSSH rejects a key without its final newline
else
    printf '%s\n' "$SSH_PRIVATE_KEY" | tr -d '\r' >"$work/id"
fi
if [[ -f $SSH_KNOWN_HOSTS ]]; then
    cp "$SSH_KNOWN_HOSTS" "$work/known_hosts"
else
    printf '%s\n' "$SSH_KNOWN_HOSTS" >"$work/known_hosts"
fi
ssh_opts=(
    -i "$work/id" -o IdentitiesOnly=yes -o BatchMode=yes
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$work/known_hosts"
    -o ConnectTimeout=20 -o ServerAliveInterval=15
)
remote() { ssh "${ssh_opts[@]}" -p "$port" "$DEPLOYMENT_SERVER" "$@"; }
q() { printf '%q' "$1"; }

# deploy.env: sourced by bash on the server (values quoted with %q). Only variables that are set
# are written, so that the services' own defaults apply to the others.
{
    printf 'IMAGE_TAG=%q\n' "$IMAGE_TAG"
    printf 'DOCKER_REGISTRY_URL=%q\n' "$DOCKER_REGISTRY_URL"
    while IFS= read -r name; do
        printf '%s=%q\n' "$name" "${!name}"
    done < <(compgen -e | grep -E '^(KAFKA_|CASSANDRA_|PRODUCER_|READER_|WRITER_|ALERT_|MAX_RECORD_BYTES$|MAX_FUTURE_SKEW_SECS$|LOG_FORMAT$|RUST_LOG$|COMPOSE_PROFILES$|GF_SECURITY_ADMIN_PASSWORD$)' | sort)
} >"$work/deploy.env"
echo "settings sent to the server: $(cut -d= -f1 "$work/deploy.env" | tr '\n' ' ')"

echo "==> $DEPLOYMENT_SERVER:$path (image tag $IMAGE_TAG)"
# World-readable except deploy.env: containers (e.g. Prometheus) mount files from here.
remote "umask 022 && mkdir -p $(q "$path")/docker"
remote "umask 022 && cat > $(q "$path")/docker-compose.yml" <docker-compose.yml
remote "umask 022 && cat > $(q "$path")/docker/wait-ready.sh && chmod 755 $(q "$path")/docker/wait-ready.sh" <docker/wait-ready.sh
if [[ -f docker/prometheus.yml ]]; then
    remote "umask 022 && cat > $(q "$path")/docker/prometheus.yml" <docker/prometheus.yml
fi
if [[ -d docker/grafana ]]; then
    tar -C docker -cf - grafana | remote "umask 022 && tar -C $(q "$path")/docker -xf -"
fi
remote "umask 077 && cat > $(q "$path")/deploy.env" <"$work/deploy.env"

if [[ -n $registry_user && -n $registry_password ]]; then
    printf '%s' "$registry_password" |
        remote "docker login --username $(q "$registry_user") --password-stdin $(q "$registry_host")"
fi

status=0
remote bash -s -- "$(q "$path")" "$(q "$ready_timeout")" <<'REMOTE' || status=$?
set -euo pipefail
cd "$1"
set -a
. ./deploy.env
set +a
docker compose config --quiet
docker compose pull --quiet
docker compose up --detach --no-build --remove-orphans
docker/wait-ready.sh --timeout "$2"
REMOTE

if [[ -n $registry_user && -n $registry_password ]]; then
    remote "docker logout $(q "$registry_host")" || true
fi
if ((status != 0)); then
    echo "deploy FAILED (status $status). Roll back from Deployments > Environments > production" >&2
    exit "$status"
fi
echo "deployed $IMAGE_TAG to $DEPLOYMENT_SERVER"

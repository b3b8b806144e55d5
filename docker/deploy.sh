#!/usr/bin/env bash
# Deploys the stack to $DEPLOYMENT_SERVER over SSH (the GitLab `deploy` job runs this).
#
# 1. copies to $DEPLOY_PATH: docker-compose.yml, docker/wait-ready.sh, everything the compose
#    file mounts (docker/prometheus.yml, docker/prometheus-rules.yml, docker/alertmanager.yml,
#    docker/grafana/) and a
#    deploy.env (mode 0600) with IMAGE_TAG, DOCKER_REGISTRY_URL, SECRETS_DIR and every pipeline
#    setting set in the CI environment (KAFKA_*, CASSANDRA_*, PRODUCER_*, READER_*, WRITER_*,
#    GEOIP_DIR, COMPOSE_PROFILES, ...); the GeoIP databases themselves are not copied:
#    they are licensed files that live on the server, in GEOIP_DIR;
# 2. writes the passwords given as CI variables (KAFKA_SASL_PASSWORD, KAFKA_SSL_KEY_PASSWORD,
#    CASSANDRA_PASSWORD) as files into $DEPLOY_PATH/private/secrets (SECRETS_DIR, mounted at
#    /run/secrets) and sets the matching *_FILE setting instead of the value; other files there
#    (TLS certificates and keys put there by hand) are kept;
# 3. logs the server in to the registry (password through stdin, never on a command line);
# 4. there: `docker compose config`, `pull`; the schema migrations first (`run --rm --no-deps
#    cassandra-migrate`, unless DEPLOY_MIGRATE=false or the `local` profile runs them itself);
#    the topics with kafka-init only when DEPLOY_CREATE_TOPICS=true; then the services that
#    already run are replaced one service at a time (stream-reader, cassandra-writer, producer),
#    each waited for with docker/wait-ready.sh; then `up -d --remove-orphans` for the rest and
#    docker/wait-ready.sh for everything: fails unless every service is ready in time.
#
# Required: DEPLOYMENT_SERVER (user@host), SSH_PRIVATE_KEY (a "File" CI variable, or the key
# itself), SSH_KNOWN_HOSTS (the server's host keys: `ssh-keyscan -p PORT HOST`, a "File" variable
# or the text), IMAGE_TAG, DOCKER_REGISTRY_URL; for the production setup also KAFKA_BROKER,
# CASSANDRA_NODES, CASSANDRA_LOCAL_DC and CASSANDRA_REPLICATION (`docker compose config` on the
# server names what is missing).
# Optional: DEPLOYMENT_SSH_PORT (22), DEPLOY_PATH (/opt/ip-log-pipeline), READY_TIMEOUT_SECS
# (300), DEPLOY_MIGRATE (true), DEPLOY_CREATE_TOPICS (false), REGISTRY_USER / REGISTRY_PASSWORD
# (default: the job's CI_REGISTRY_USER/PASSWORD, valid for the job's lifetime only: the server
# logs out at the end).
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

# Passwords become files of the secrets directory; the services get the *_FILE setting.
declare -A secret_files=(
    [KAFKA_SASL_PASSWORD]=kafka_sasl_password
    [KAFKA_SSL_KEY_PASSWORD]=kafka_ssl_key_password
    [CASSANDRA_PASSWORD]=cassandra_password
)
mkdir "$work/secrets"
for name in "${!secret_files[@]}"; do
    if [[ -n ${!name:-} ]]; then
        if [[ -f ${!name} ]]; then # a "File" CI variable: the path of the value
            tr -d '\r' <"${!name}" >"$work/secrets/${secret_files[$name]}"
        else
            printf '%s' "${!name}" >"$work/secrets/${secret_files[$name]}"
        fi
    fi
done

# deploy.env: sourced by bash on the server (values quoted with %q). Only variables that are set
# are written, so that the services' own defaults apply to the others.
{
    printf 'IMAGE_TAG=%q\n' "$IMAGE_TAG"
    printf 'DOCKER_REGISTRY_URL=%q\n' "$DOCKER_REGISTRY_URL"
    printf 'SECRETS_DIR=%q\n' "$path/private/secrets"
    while IFS= read -r name; do
        if [[ -n ${secret_files[$name]:-} ]]; then
            printf '%s_FILE=%q\n' "$name" "/run/secrets/${secret_files[$name]}"
        else
            printf '%s=%q\n' "$name" "${!name}"
        fi
    done < <(compgen -e | grep -E '^(KAFKA_|CASSANDRA_|PRODUCER_|READER_|WRITER_|GEOIP_DIR$|LOG_FORMAT$|RUST_LOG$|COMPOSE_PROFILES$|GF_SECURITY_ADMIN_PASSWORD$)' | sort)
} >"$work/deploy.env"
echo "settings sent to the server: $(cut -d= -f1 "$work/deploy.env" | tr '\n' ' ')"
shopt -s nullglob
secret_names=()
for file in "$work"/secrets/*; do
    secret_names+=("${file##*/}")
done
shopt -u nullglob
echo "secret files sent to the server: ${secret_names[*]}"

echo "==> $DEPLOYMENT_SERVER:$path (image tag $IMAGE_TAG)"
# World-readable except deploy.env and private/: containers (e.g. Prometheus) mount files from
# here. private/ (0700) keeps the secrets from other users of the host; the secrets directory in
# it and its files are readable by the services' UID 10001 inside the containers.
remote "umask 022 && mkdir -p $(q "$path")/docker && install -d -m 0700 $(q "$path")/private && install -d -m 0711 $(q "$path")/private/secrets"
remote "umask 022 && cat > $(q "$path")/docker-compose.yml" <docker-compose.yml
remote "umask 022 && cat > $(q "$path")/docker/wait-ready.sh && chmod 755 $(q "$path")/docker/wait-ready.sh" <docker/wait-ready.sh
for file in docker/prometheus.yml docker/prometheus-rules.yml docker/alertmanager.yml; do
    remote "umask 022 && cat > $(q "$path/$file")" <"$file"
done
tar -C docker -cf - grafana | remote "umask 022 && rm -rf $(q "$path")/docker/grafana && tar -C $(q "$path")/docker -xf -"
remote "umask 077 && cat > $(q "$path")/deploy.env" <"$work/deploy.env"
if ((${#secret_names[@]})); then
    # The files only (not the directory entry, whose 0700 would replace the 0711 there).
    tar -C "$work/secrets" -cf - "${secret_names[@]}" |
        remote "cd $(q "$path")/private/secrets && rm -f $(printf '%q ' "${secret_names[@]}") && tar -xf - && chmod 0444 $(printf '%q ' "${secret_names[@]}")"
fi

if [[ -n $registry_user && -n $registry_password ]]; then
    printf '%s' "$registry_password" |
        remote "docker login --username $(q "$registry_user") --password-stdin $(q "$registry_host")"
fi

status=0
remote bash -s -- "$(q "$path")" "$(q "$ready_timeout")" "$(q "${DEPLOY_MIGRATE:-true}")" \
    "$(q "${DEPLOY_CREATE_TOPICS:-false}")" <<'REMOTE' || status=$?
set -euo pipefail
cd "$1"
timeout=$2 migrate=$3 create_topics=$4
set -a
. ./deploy.env
# Changes whenever a file of the secrets directory does: compose then recreates the services,
# which read their credentials at start (rotation = new files + deploy).
SECRETS_REVISION=$(cd "$SECRETS_DIR" && find . -type f -print0 | sort -z | xargs -0r sha256sum | sha256sum | cut -c1-16)
set +a
docker compose config --quiet
enabled=$(docker compose config --services)
docker compose pull --quiet
if [[ $create_topics == true ]] && ! grep -qx kafka-init <<<"$enabled"; then
    echo "--- topics: kafka-init"
    docker compose run --rm --no-deps -T kafka-init
fi
if [[ $migrate == true ]] && ! grep -qx cassandra-migrate <<<"$enabled"; then
    echo "--- schema migrations: cassandra-migrate"
    docker compose run --rm --no-deps -T cassandra-migrate
fi
# An upgrade: one service at a time, readers before writers; each drains and commits on SIGTERM.
for svc in stream-reader cassandra-writer producer; do
    if grep -qx "$svc" <<<"$enabled" && [[ -n $(docker compose ps --quiet "$svc") ]]; then
        echo "--- $svc"
        docker compose up --detach --no-build --no-deps "$svc"
        docker/wait-ready.sh --timeout "$timeout" "$svc"
    fi
done
docker compose up --detach --no-build --remove-orphans
docker/wait-ready.sh --timeout "$timeout"
REMOTE

if [[ -n $registry_user && -n $registry_password ]]; then
    remote "docker logout $(q "$registry_host")" || true
fi
if ((status != 0)); then
    echo "deploy FAILED (status $status). Roll back from Deployments > Environments > production" >&2
    exit "$status"
fi
echo "deployed $IMAGE_TAG to $DEPLOYMENT_SERVER"

#!/usr/bin/env bash
# Checks every setup that docker/README.md documents with `docker compose config`, which parses,
# interpolates, merges and validates the model exactly as `up` would (no Docker engine needed):
#
#   * each `docker compose ... up ...` line of the README's setups block (between the
#     `BEGIN setups` and `END setups` markers) is run as `docker compose ... config --quiet`,
#     and the services it enables are compared with what its profiles promise; the top-level
#     README.md's and docs/*.md's `docker compose ... up` lines must be among them;
#   * the production setup (no profile) refuses to start without KAFKA_BROKER;
#   * the runbook's one-shots against existing clusters (`run --no-deps kafka-init`,
#     `run --no-deps cassandra-migrate`) resolve.
#
# Lines without --env-file get example production settings (the deploy's deploy.env has the real
# ones); every check runs with an environment of its own, so the caller's settings do not leak in.
# Uses `docker compose` when it works, else the plugin that docker/install-compose.sh builds.
set -euo pipefail
cd "$(dirname "$0")/.."

readme=docker/README.md

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
    docker_config=${DOCKER_CONFIG:-$HOME/.docker}
else
    docker_config=$(bash docker/install-compose.sh)
    if command -v docker >/dev/null; then
        compose=(docker compose)
    else
        compose=("$docker_config/cli-plugins/docker-compose")
    fi
fi
echo "using: $(DOCKER_CONFIG=$docker_config "${compose[@]}" version)"

production_env=(
    "KAFKA_BROKER=broker-1.example.com:9092,broker-2.example.com:9092,broker-3.example.com:9092"
    "CASSANDRA_NODES=cassandra-1.example.com:9042,cassandra-2.example.com:9042"
    CASSANDRA_LOCAL_DC=dc1
    "CASSANDRA_REPLICATION={'class': 'NetworkTopologyStrategy', 'dc1': 3}"
)

# Runs "${compose[@]}" with the given arguments in a clean environment (plus "$@" before --).
run_compose() {
    local -a env=()
    while (($#)) && [[ $1 != -- ]]; do
        env+=("$1")
        shift
    done
    shift
    env -i PATH="$PATH" HOME="$HOME" DOCKER_CONFIG="$docker_config" "${env[@]}" \
        "${compose[@]}" "$@"
}

# The services a set of profiles must enable.
expected_services() {
    local -a out=(stream-reader cassandra-writer)
    local p
    for p in "$@"; do
        case $p in
            local) out+=(kafka cassandra kafka-init cassandra-migrate) ;;
            cluster) out+=(kafka-1 kafka-2 kafka-3 cassandra-1 cassandra-2 cassandra-3 kafka-init cassandra-migrate) ;;
            demo) out+=(producer) ;;
            tools) out+=(kafka-ui cqlsh) ;;
            monitoring) out+=(prometheus alertmanager grafana) ;;
            *)
                echo "unknown profile $p" >&2
                return 1
                ;;
        esac
    done
    printf '%s\n' "${out[@]}" | sort -u
}

failed=0
fail() {
    echo "FAILED: $*" >&2
    failed=1
}

lines=$(sed -n '/<!-- BEGIN setups/,/<!-- END setups/p' "$readme" | grep -E '^docker compose( .*)? up( |$)' || true)
if [[ -z $lines ]]; then
    echo "no setups block with \`docker compose ... up\` lines in $readme" >&2
    exit 1
fi

count=0
while IFS= read -r line; do
    count=$((count + 1))
    # The arguments before `up` (README lines hold no quotes); every -f/--env-file path is
    # relative to the repository root, as in the README.
    read -ra words <<<"${line%% up*}"
    args=("${words[@]:2}")
    profiles=()
    env=()
    for ((i = 0; i < ${#args[@]}; i++)); do
        [[ ${args[i]} == --profile ]] && profiles+=("${args[i + 1]}")
    done
    [[ " ${args[*]} " == *" --env-file "* ]] || env=("${production_env[@]}")
    echo "--- $line"
    if ! run_compose "${env[@]}" -- "${args[@]}" config --quiet; then
        fail "$line"
        continue
    fi
    actual=$(run_compose "${env[@]}" -- "${args[@]}" config --services | sort -u)
    expected=$(expected_services "${profiles[@]}")
    if [[ $actual != "$expected" ]]; then
        fail "$line: services $(echo "$actual" | tr '\n' ' ')instead of $(echo "$expected" | tr '\n' ' ')"
    else
        echo "ok: $(echo "$actual" | tr '\n' ' ')"
    fi
done <<<"$lines"

# The compose commands of the top-level README and of docs/ must be setups checked above.
while IFS=: read -r file line; do
    line=${line%%#*}
    line=${line%"${line##*[![:space:]]}"}
    if ! grep -qxF -- "$line" <<<"$lines"; then
        fail "$file: \`$line\` is not a setup of $readme"
    fi
done < <(grep -HE '^docker compose( .*)? up( |$)' README.md docs/*.md || true)

# Every other documented `docker compose` command: the flags written before its subcommand
# must load the project (`config --quiet`), and a service it names (exec, logs, stop, start,
# restart) must be one of the services those flags enable; `run` starts a service of any
# profile when it names it, so its service must only exist. A command that lacks the
# --env-file/--profile its service needs fails here, as compose would refuse it.
echo "--- every documented docker compose command"
checked=0
while IFS=: read -r file lineno line; do
    line=${line%%#*}
    read -ra words <<<"$line"
    args=()
    i=2
    while ((i < ${#words[@]})); do
        case ${words[i]} in
            -f | --file | --env-file | --profile | -p | --project-name)
                args+=("${words[i]}" "${words[i + 1]}")
                i=$((i + 2))
                ;;
            -*)
                args+=("${words[i]}")
                i=$((i + 1))
                ;;
            *) break ;;
        esac
    done
    sub=${words[i]:-}
    service=""
    case $sub in
        exec | logs | run | stop | start | restart)
            j=$((i + 1))
            while ((j < ${#words[@]})) && [[ ${words[j]} == -* ]]; do
                case ${words[j]} in
                    --entrypoint | -e | --env | -w | --workdir | -u | --user | --name) j=$((j + 2)) ;;
                    *) j=$((j + 1)) ;;
                esac
            done
            service=${words[j]:-}
            ;;
    esac
    env=()
    [[ " ${args[*]} " == *" --env-file "* ]] || env=("${production_env[@]}")
    where="$file:$lineno: docker compose ${args[*]} $sub $service"
    if ! services=$(run_compose "${env[@]}" -- "${args[@]}" config --services 2>&1); then
        fail "$where: the project does not load: $services"
        continue
    fi
    if [[ $sub == run ]]; then
        services=$(run_compose "${env[@]}" -- "${args[@]}" --profile '*' config --services)
    fi
    if [[ -n $service ]] && ! grep -qxF -- "$service" <<<"$services"; then
        fail "$where: no service $service with these flags (services: $(echo "$services" | tr '\n' ' '))"
        continue
    fi
    checked=$((checked + 1))
done < <(grep -nHE '^[[:space:]]*docker compose ' terminal.txt README.md docs/*.md docker/README.md | sed -E 's/^([^:]*):([0-9]*):[[:space:]]*/\1:\2:/')
echo "ok: $checked documented docker compose commands"

echo "--- production without KAFKA_BROKER is refused"
if error=$(run_compose "${production_env[@]:1}" -- config --quiet 2>&1); then
    fail "docker compose config passed without KAFKA_BROKER"
elif [[ $error != *"KAFKA_BROKER"* ]]; then
    fail "the error does not name KAFKA_BROKER: $error"
else
    echo "ok: $error"
fi

for job in kafka-init cassandra-migrate; do
    echo "--- one-shot against existing clusters: docker compose run --rm --no-deps $job"
    if run_compose "${production_env[@]}" -- config --quiet "$job"; then
        echo "ok"
    else
        fail "config $job"
    fi
done

if ((failed)); then
    echo "check-profiles: FAILED" >&2
    exit 1
fi
echo "check-profiles: $count setups of $readme and the production checks passed"

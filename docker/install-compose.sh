#!/usr/bin/env bash
# Makes the Docker Compose v2 CLI plugin available for the static checks (docker/validate.sh)
# on a machine that has no Docker installation with it, and prints the directory to use as
# DOCKER_CONFIG:
#
#   DOCKER_CONFIG=$(bash docker/install-compose.sh) docker compose version
#
# The plugin is built from source with Go (1.24 or newer) from the Go module proxy
# (github.com/docker/compose/v2 at COMPOSE_VERSION, default v2.40.3; Go 1.24 or newer) and kept at
# target/tools/compose-<version>/cli-plugins/docker-compose; running the script again reuses
# that binary. The same binary also runs standalone, without a docker CLI:
# target/tools/compose-<version>/cli-plugins/docker-compose config --quiet
#
# `docker compose config` needs no Docker engine; nothing here talks to one.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${COMPOSE_VERSION:-v2.40.3}
dir=$PWD/target/tools/compose-$version
plugin=$dir/cli-plugins/docker-compose

if [[ ! -x $plugin ]]; then
    if ! command -v go >/dev/null; then
        echo "install-compose: needs Go 1.24 or newer to build docker compose $version" >&2
        exit 1
    fi
    mkdir -p "$dir/cli-plugins"
    echo "install-compose: building github.com/docker/compose/v2 $version with $(go version)" >&2
    start=$SECONDS
    # `go install ...@version` refuses this module (its go.mod has exclude directives), so the
    # module's source is downloaded into the module cache and built there as the main module.
    # The -X flag sets what `docker compose version` prints, as the release build does.
    src=$(go mod download -json "github.com/docker/compose/v2@$version" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    if [[ -z $src || ! -f $src/go.mod ]]; then
        echo "install-compose: could not download github.com/docker/compose/v2@$version" >&2
        exit 1
    fi
    (cd "$src" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
        -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$version" \
        -o "$plugin.tmp" ./cmd) >&2
    mv "$plugin.tmp" "$plugin"
    echo "install-compose: built $plugin in $((SECONDS - start))s" >&2
fi
printf '%s\n' "$dir"

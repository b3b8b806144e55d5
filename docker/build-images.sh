#!/bin/sh
# Builds and pushes the three service images (the GitLab `images` job runs this; POSIX sh, as
# the docker:27 image has no bash) under one tag:
#
#   $DOCKER_REGISTRY_URL/<service>:$IMAGE_TAG
#
# The CI gives a candidate tag (pipeline-$CI_PIPELINE_ID): the commit SHA tag, which the deploy
# pulls, and :latest are only added by docker/tag-images.sh once the tests passed.
# Needs a logged-in Docker CLI with buildx and a docker-container builder (see .gitlab-ci.yml).
# The BuildKit layer cache lives in $DOCKER_REGISTRY_URL/build-cache:builder: every build reads
# it, pipelines of the default branch write it (mode=max: the compiled dependencies included).
set -eu
cd "$(dirname "$0")/.."

: "${DOCKER_REGISTRY_URL:?DOCKER_REGISTRY_URL is not set}"
: "${IMAGE_TAG:?IMAGE_TAG is not set}"
branch=${CI_COMMIT_BRANCH:-}
default_branch=${CI_DEFAULT_BRANCH:-main}
revision=${CI_COMMIT_SHA:-$IMAGE_TAG}
source_url=${CI_PROJECT_URL:-https://example.invalid/ip-log-pipeline}

cache_ref="$DOCKER_REGISTRY_URL/build-cache:builder"
cache_to=""
if [ "$branch" = "$default_branch" ]; then
    cache_to="--cache-to=type=registry,ref=$cache_ref,mode=max"
fi
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

for service in producer stream-reader cassandra-writer; do
    set -- --tag "$DOCKER_REGISTRY_URL/$service:$IMAGE_TAG"
    if [ -n "$cache_to" ]; then
        set -- "$@" "$cache_to"
    fi
    echo "=== $service -> $DOCKER_REGISTRY_URL/$service:$IMAGE_TAG"
    # The first target builds the shared builder stage; the next ones reuse it.
    docker buildx build \
        --file docker/Dockerfile --target "$service" \
        --build-arg VERSION="$version" --build-arg REVISION="$revision" \
        --build-arg CREATED="$created" --build-arg SOURCE="$source_url" \
        --cache-from "type=registry,ref=$cache_ref" \
        "$@" --push .
    # One cache export (of the first build, which holds every shared stage) is enough.
    cache_to=""
done

#!/bin/sh
# Adds tags to the three pushed service images, in the registry (manifests only: no layer is
# pulled or pushed again). The GitLab `push` and `latest` jobs run this (POSIX sh):
#
#   docker/tag-images.sh SOURCE_TAG TAG...
#
# e.g. `docker/tag-images.sh pipeline-123 "$CI_COMMIT_SHA"` makes
# $DOCKER_REGISTRY_URL/<service>:$CI_COMMIT_SHA the image that was built as :pipeline-123.
# Needs a logged-in Docker CLI with buildx.
set -eu

: "${DOCKER_REGISTRY_URL:?DOCKER_REGISTRY_URL is not set}"
if [ "$#" -lt 2 ]; then
    echo "usage: $0 SOURCE_TAG TAG..." >&2
    exit 2
fi
source_tag=$1
shift
tags="$*"

for service in producer stream-reader cassandra-writer; do
    repo="$DOCKER_REGISTRY_URL/$service"
    echo "=== $repo:$source_tag -> $tags"
    set --
    for tag in $tags; do
        set -- "$@" --tag "$repo:$tag"
    done
    docker buildx imagetools create "$@" "$repo:$source_tag"
done

# syntax=docker/dockerfile:1
#
# Image of the GitLab `test` job (and of fmt/clippy): the Rust toolchain of docker/Dockerfile's
# builder, plus what `cargo xtask test` runs against: Java 17 and Maven for the real Apache Kafka
# and Apache Cassandra servers it resolves from Maven Central, python3-venv for cqlsh, and
# Debian's prometheus for the monitoring test. Built and pushed by the `ci-image` job:
#
#   docker buildx build -f docker/ci.Dockerfile -t ci-image docker
#
# (the build context is docker/; nothing is copied from it.)
FROM rust:1.95-bookworm
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven python3-venv prometheus prometheus-alertmanager \
    && rm -rf /var/lib/apt/lists/*
RUN rustup component add rustfmt clippy

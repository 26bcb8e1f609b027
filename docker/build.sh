#!/usr/bin/env bash
# Builds deliberate's images, and local stand-ins where an official base cannot be pulled.
#   docker/build.sh cpu         deliberate:cpu  (BASE_IMAGE, default python:3.11-slim-bookworm)
#   docker/build.sh gpu         deliberate:gpu  (BASE_IMAGE, default vllm/vllm-openai:v0.32.0)
#   docker/build.sh services    local Redis, nginx and Prometheus images from Debian's packages
# When the base cannot be pulled, a Debian base is made with debootstrap (LOCAL_BASE); the output
# says which base was used. Where this machine's pip finds torch's CPU build on local disk (a
# find-links directory), the build gets it from there, over loopback, as pip here does.
set -euo pipefail
cd "$(dirname "$0")/.."

LOCAL_BASE=${LOCAL_BASE:-local/debian-python:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TORCH_VERSION=2.13.0
WHEEL_PORT=${WHEEL_PORT:-8765}

say() { echo "[build] $*" >&2; }
docker info >/dev/null 2>&1 || { say "no Docker engine answers (start dockerd)"; exit 1; }

# `docker build` with BuildKit (secrets, cache mounts): the buildx plugin, or else a client from
# before Docker 23 whose BuildKit is built in (Debian's docker.io), whichever PATH has first.
buildkit_build() {
    local client
    for client in $(type -ap docker); do
        if "$client" buildx version >/dev/null 2>&1; then
            "$client" buildx build --load "$@"; return
        fi
        local major
        major=$("$client" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
        if [[ -n "$major" && "$major" -lt 23 ]]; then
            DOCKER_BUILDKIT=1 "$client" build "$@"; return
        fi
    done
    say "no docker client here builds with BuildKit: install the buildx plugin"; exit 1
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# A minimal Debian bookworm with python3 and venv, from Debian's packages alone.
make_local_base() {
    have_image "$LOCAL_BASE" && return
    command -v debootstrap >/dev/null || { apt-get update && apt-get install -y debootstrap; }
    local rootfs
    rootfs=$(mktemp -d /tmp/deliberate-rootfs.XXXXXX)
    say "making $LOCAL_BASE with debootstrap from $DEBIAN_MIRROR (a few minutes)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$DEBIAN_MIRROR" >&2
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$LOCAL_BASE" >/dev/null
    rm -rf "$rootfs"
}

# The base to build on: the one asked for when it is here or can be pulled, else the local one.
choose_base() {
    local wanted=$1
    if have_image "$wanted" || docker pull "$wanted" >/dev/null 2>&1; then
        say "base image: $wanted"; echo "$wanted"; return
    fi
    make_local_base
    say "base image: $LOCAL_BASE (made here from Debian's packages: $wanted cannot be pulled)"
    echo "$LOCAL_BASE"
}

pip_setting() {  # the value pip uses for a setting (environment first, then its config files)
    python3 -m pip config list 2>/dev/null | sed -n "s/^[^.]*\.$1='\(.*\)'$/\1/p" | head -1
}

# pip's CA certificate, lent to the build as a secret (never stored in a layer).
cert_args() {
    local cert=${PIP_CERT:-$(pip_setting cert)}
    [[ -n "$cert" && -s "$cert" ]] && echo "--secret id=pip_cert,src=$cert"
}

# A find-links directory of pip's that holds torch's CPU wheel: served on loopback for the build.
torch_wheel_dir() {
    local dir
    for dir in ${PIP_FIND_LINKS:-} $(pip_setting find-links); do
        compgen -G "$dir/torch-$TORCH_VERSION+cpu-*.whl" >/dev/null && { echo "$dir"; return; }
    done
    return 0
}

build_cpu() {
    local base wheels
    base=$(choose_base "${BASE_IMAGE:-python:3.11-slim-bookworm}")
    local args=(--network host -f docker/Dockerfile.cpu -t "${IMAGE:-deliberate:cpu}" --build-arg "BASE_IMAGE=$base")
    wheels=$(torch_wheel_dir)
    if [[ -n "$wheels" ]]; then
        say "torch $TORCH_VERSION CPU: from $wheels (pip's find-links here), served on 127.0.0.1:$WHEEL_PORT"
        python3 -m http.server --bind 127.0.0.1 --directory "$wheels" "$WHEEL_PORT" >/dev/null 2>&1 &
        WHEEL_SERVER=$!
        trap 'kill $WHEEL_SERVER 2>/dev/null || true' EXIT
        args+=(--build-arg "TORCH_PIP_ARGS=--find-links http://127.0.0.1:$WHEEL_PORT/")
    else
        say "torch $TORCH_VERSION CPU: from PyTorch's CPU index"
    fi
    # shellcheck disable=SC2046
    buildkit_build "${args[@]}" $(cert_args) .
}

build_gpu() {
    local base
    base=$(choose_base "${BASE_IMAGE:-vllm/vllm-openai:v0.32.0}")
    # shellcheck disable=SC2046
    buildkit_build --network host -f docker/Dockerfile.gpu -t "${IMAGE:-deliberate:gpu}" \
        --build-arg "BASE_IMAGE=$base" $(cert_args) .
}

# The Redis, nginx and Prometheus images for the stack: the official ones where they are here or
# can be pulled, else stand-ins from Debian's packages. Prints REDIS_IMAGE=... lines for `eval`.
build_services() {
    local entry variable official package name
    for entry in REDIS_IMAGE:redis:7.4-alpine:redis-server NGINX_IMAGE:nginx:1.27-alpine:nginx \
                 PROMETHEUS_IMAGE:prom/prometheus:v2.55.1:prometheus; do
        variable=${entry%%:*}; official=${entry#*:}; official=${official%:*}; package=${entry##*:}
        if have_image "$official" || docker pull "$official" >/dev/null 2>&1; then
            say "$variable: $official"; echo "$variable=$official"; continue
        fi
        make_local_base
        name=local/$package:bookworm
        if ! have_image "$name"; then
            say "$name: Debian's $package on $LOCAL_BASE ($official cannot be pulled)"
            buildkit_build --network host -f docker/Dockerfile.debian-package -t "$name" \
                --build-arg "BASE_IMAGE=$LOCAL_BASE" --build-arg "PACKAGES=$package" docker >&2
        fi
        say "$variable: $name (made here from Debian's $package: $official cannot be pulled)"
        echo "$variable=$name"
    done
}

case "${1:-}" in
    cpu) build_cpu ;;
    gpu) build_gpu ;;
    services) build_services ;;
    *) echo "usage: $0 cpu|gpu|services" >&2; exit 2 ;;
esac

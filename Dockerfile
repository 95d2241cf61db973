# syntax=docker/dockerfile:1
#
# forwarder container image.
#
#   docker build -t forwarder .
#   docker run --rm -p 53:53/udp -p 53:53/tcp -p 9153:9153 \
#       -v "$PWD/my.yaml:/etc/forwarder/forwarder.yaml:ro" forwarder
#
# The image ships config/container.yaml as /etc/forwarder/forwarder.yaml: DNS on
# 0.0.0.0:53 (UDP and TCP) forwarding to the container's resolvers, for the clients the
# default acl admits (loopback and private networks: Docker's bridges, pod networks), and
# /metrics, /healthz, /readyz on 0.0.0.0:9153, as EXPOSE says. For real use mount a config
# (or a whole /etc/forwarder directory, read-only is fine) with your zones and upstreams.
#
# HEALTHCHECK runs `forwarder health -c /etc/forwarder/forwarder.yaml`: it reads the same
# file to find /readyz on `metrics.listen` (or, with metrics off, asks DNS on the first
# listener), so a mounted config with other ports or without metrics stays healthy.
#
# Port 53 as the unprivileged user `forwarder` (uid 10053), no capability needed:
#   net.ipv4.ip_unprivileged_port_start at 53 or below in the container's network
#       namespace. Docker 20.10+ sets it to 0 for a container with its own network
#       namespace, so port 53 just works; on older engines pass
#       --sysctl net.ipv4.ip_unprivileged_port_start=53. Kubernetes: the pod's
#       securityContext.sysctls (a safe sysctl since 1.22; deploy/kubernetes/).
#   With --network host the sysctl is the host's: either set it there, or start as root
#       with only NET_BIND_SERVICE and let forwarder drop privileges after binding
#       (Docker does not raise capabilities into the ambient set for a non-root USER):
#         docker run --user 0 --cap-drop ALL \
#             --cap-add NET_BIND_SERVICE --cap-add SETUID --cap-add SETGID ... \
#             forwarder forwarder run -c /etc/forwarder/forwarder.yaml --user forwarder
# Reload the configuration with `docker kill -s HUP <name>` (or set `reload: {watch:
# true}` in it); `docker stop` sends SIGTERM, on which forwarder drains and exits 0.
#
# Dependencies are installed from requirements.lock (exact versions and their sha256
# hashes, `pip install --require-hashes`), the project itself without dependencies.
# scripts/container-smoke.sh performs the same install steps without a Docker engine.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: a virtualenv with forwarder and its dependencies ----------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/forwarder

WORKDIR /src
# the locked dependencies first (a layer that outlives source changes), every file checked
# against its hash; setuptools, the build backend, is locked too: nothing unhashed is fetched
COPY requirements.lock /src/requirements.lock
RUN /opt/forwarder/bin/pip install --no-cache-dir --require-hashes -r /src/requirements.lock
COPY . /src
RUN /opt/forwarder/bin/pip install --no-cache-dir --no-deps --no-build-isolation /src

# ---- final: the venv, a non-root user, the default config ---------------------------
FROM ${PYTHON_IMAGE}

# Same base image, so the venv's python symlink (/usr/local/bin/python3.11) resolves.
COPY --from=builder /opt/forwarder /opt/forwarder

ENV PATH=/opt/forwarder/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# A fixed numeric uid/gid: `USER` by number lets Kubernetes' runAsNonRoot check it, and
# mounted config files can be owned by a known id.
ARG FORWARDER_UID=10053
RUN groupadd --system --gid "${FORWARDER_UID}" forwarder \
    && useradd --system --uid "${FORWARDER_UID}" --gid forwarder --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin forwarder

# Default configuration; mount your own over /etc/forwarder (read-only is fine).
COPY config/container.yaml /etc/forwarder/forwarder.yaml

# DNS and metrics/health (/metrics /healthz /readyz): the ports of the default config.
EXPOSE 53/udp 53/tcp 9153

# Ready per the mounted config's own endpoint: /readyz on metrics.listen, else DNS.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["forwarder", "health", "-c", "/etc/forwarder/forwarder.yaml"]

USER ${FORWARDER_UID}:${FORWARDER_UID}

STOPSIGNAL SIGTERM
CMD ["forwarder", "run", "-c", "/etc/forwarder/forwarder.yaml"]

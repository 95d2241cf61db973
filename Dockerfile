# syntax=docker/dockerfile:1
#
# forwarder container image.
#
#   docker build -t forwarder .
#   docker run --rm -p 53:53/udp -p 53:53/tcp -p 9153:9153 \
#       --sysctl net.ipv4.ip_unprivileged_port_start=53 \
#       -v "$PWD/container.yaml:/etc/forwarder/forwarder.yaml:ro" forwarder
#
# The image ships config/forwarder.yaml as /etc/forwarder/forwarder.yaml. That default
# listens on 127.0.0.1:5353 with metrics on 127.0.0.1:9153: reachable only from inside
# the container (enough for the HEALTHCHECK). For real use mount a config (or a whole
# /etc/forwarder directory, read-only is fine) that listens on 0.0.0.0:53 (and "::"
# for IPv6), sets `metrics: {listen: "0.0.0.0:9153"}`, and whose `acl.allow` covers
# your clients.
#
# Port 53 as the unprivileged user `forwarder`:
#   --sysctl net.ipv4.ip_unprivileged_port_start=53
#       for a container with its own network namespace (not --network host). Docker
#       20.10+ already sets this sysctl to 0 there, so port 53 just works.
#   --cap-add NET_BIND_SERVICE
#       is enough only for a root process: Docker does not raise capabilities into
#       the ambient set for a non-root USER. To use it, start as root and let forwarder
#       drop privileges itself after binding:
#         docker run --user 0 --cap-drop ALL \
#             --cap-add NET_BIND_SERVICE --cap-add SETUID --cap-add SETGID ... \
#             forwarder forwarder run -c /etc/forwarder/forwarder.yaml --user forwarder
# Reload the configuration with `docker kill -s HUP <name>`; `docker stop` sends
# SIGTERM, on which forwarder drains and exits 0.
#
# scripts/container-smoke.sh performs the same install steps without a Docker engine.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: a virtualenv with forwarder and its dependencies ----------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/forwarder

WORKDIR /src
COPY . /src
RUN /opt/forwarder/bin/pip install --no-cache-dir /src

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
COPY config/forwarder.yaml /etc/forwarder/forwarder.yaml

# DNS (with a config listening on port 53) and metrics/health (/metrics /healthz /readyz).
EXPOSE 53/udp 53/tcp 9153

# No curl in the slim image: python's urllib asks /healthz; any error or non-200 fails.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9153/healthz', timeout=4).status == 200 else 1)"]

USER ${FORWARDER_UID}:${FORWARDER_UID}

STOPSIGNAL SIGTERM
CMD ["forwarder", "run", "-c", "/etc/forwarder/forwarder.yaml"]

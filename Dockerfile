# The OpenClaw service. Stages:
#   build           compiler, Python headers: builds the wheel (mypyc compiles the limiter's hot
#                   path) and a venv with the serving dependencies (never torch)
#   runtime         Debian 12 with the distribution's Python 3.11 and that venv: no compiler, no
#                   PyTorch, a non-root user; the model registry is a volume to mount
#   baked-registry  registers MODEL_DIR (an artifact inside the build context) as champion
#   baked           runtime with that registry baked in (`--target baked`)
#   volume          the runtime as it is: what a build without --target gives (the last stage)
#
# scripts/build-image builds it without a Docker engine (buildah) on a base it makes with
# debootstrap; with a Docker engine, build BASE_IMAGE first (see docs/image.md).
ARG BASE_IMAGE=localhost/openclaw-base:bookworm

FROM ${BASE_IMAGE} AS build
# Metapackages, pinned to the bookworm release; they pull the current gcc-12 and python3.11-dev
# (and libc6-dev, through zlib1g-dev).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        gcc=4:12.2.0-3 \
        python3-dev=3.11.2-1+b1 \
        python3-venv=3.11.2-1+b1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The serving extras: Redis (bucket store, Redis Streams), ClickHouse (telemetry), gRPC (Envoy).
ARG EXTRAS=redis,clickhouse,grpc
COPY pyproject.toml ./
# The dependencies first, read from pyproject.toml alone, in a layer that outlives source
# changes: the build tools (mypyc) in /opt/build, the service's in /opt/openclaw.
# ca-certificates, an optional build secret: a CA bundle for pip behind a TLS-inspecting proxy
# (a secret, so it never lands in a layer).
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && export PIP_DISABLE_PIP_VERSION_CHECK=1 \
    && python3 -c "import os, tomllib; t = tomllib.load(open('pyproject.toml', 'rb')); p = t['project']; extras = [e for e in os.environ['EXTRAS'].split(',') if e]; open('/tmp/requirements.txt', 'w').write('\n'.join(p['dependencies'] + [r for e in extras for r in p['optional-dependencies'][e]])); open('/tmp/build-requirements.txt', 'w').write('\n'.join(t['build-system']['requires']))" \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip install --requirement /tmp/build-requirements.txt \
    && python3 -m venv /opt/openclaw \
    && /opt/openclaw/bin/pip install --requirement /tmp/requirements.txt
COPY setup.py README.md ./
COPY src ./src
# The wheel (mypyc compiles the hot path: the check fails the build if it did not), installed
# on the dependencies above; then pip goes, the runtime installs nothing.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
    && /opt/openclaw/bin/pip install --no-deps /tmp/wheels/openclaw-*.whl \
    && /opt/openclaw/bin/pip check \
    && /opt/openclaw/bin/python -c "import openclaw.limiter.core as m; assert m.__file__.endswith('.so'), m.__file__" \
    && /opt/openclaw/bin/pip uninstall --yes pip setuptools

FROM ${BASE_IMAGE} AS runtime
# A numeric UID, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /var/lib/openclaw --shell /usr/sbin/nologin openclaw \
    && install -d -o 10001 -g 10001 -m 0750 \
        /var/lib/openclaw /var/lib/openclaw/models /var/lib/openclaw/telemetry
COPY --from=build /opt/openclaw /opt/openclaw
ENV PATH=/opt/openclaw/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OPENCLAW_HTTP_HOST=0.0.0.0 \
    OPENCLAW_HTTP_PORT=8080 \
    OPENCLAW_POLICY_MODE=model \
    OPENCLAW_MODEL_REGISTRY_PATH=/var/lib/openclaw/models \
    OPENCLAW_TELEMETRY_URL=duckdb:///var/lib/openclaw/telemetry/openclaw-telemetry.duckdb
WORKDIR /var/lib/openclaw
LABEL org.opencontainers.image.title="openclaw" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
# 8080: the Rating API, /healthz, /readyz, /metrics; 8081: Envoy's gRPC protocol (--grpc-port).
EXPOSE 8080 8081
VOLUME ["/var/lib/openclaw/models"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('OPENCLAW_HTTP_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["openclaw"]
CMD ["serve"]

FROM build AS baked-registry
# A model artifact directory in the build context, under build/image-model/ (the one place
# .dockerignore lets through; scripts/build-image --model copies it there).
ARG MODEL_DIR=""
COPY ${MODEL_DIR} /tmp/model/
# Registered under its own version (checksums verified), champion of a registry of its own.
RUN /opt/openclaw/bin/python -c "from pathlib import Path; from openclaw.model.artifact import load_artifact; from openclaw.model.registry import Registry; src = Path('/tmp/model'); reg = Registry(Path('/registry'), user='image-build'); version = reg.register(src, version=load_artifact(src).version, reason='baked into the image'); reg.promote(version, reason='the image serves it'); print(version)"

FROM runtime AS baked
COPY --from=baked-registry --chown=10001:10001 /registry /var/lib/openclaw/models
LABEL org.opencontainers.image.description="OpenClaw rate limiting service, with its model baked in"

# The default: the runtime, the model registry to be mounted. (A stage of its own, and not a
# bare FROM, which buildah 1.28 leaves a working container behind for.)
FROM runtime AS volume
LABEL org.opencontainers.image.description="OpenClaw rate limiting service (mount a model registry at /var/lib/openclaw/models)"

# taskward in a container: one image for the node, the gateway and (in the testbed) etcd.
#
# BASE is a public Python image for users with a registry. Where none is reachable,
# scripts/offline-images.sh builds an equivalent image locally under the same tag, and puts wheels
# built on the host into docker/wheels/, from which the build then installs without a package index.
# The final image holds a virtualenv with taskward installed from its own wheel, no source tree, and
# runs as an unprivileged user.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS wheels
WORKDIR /src
COPY docker/wheels/ /wheels/
COPY pyproject.toml README.md LICENSE ./
COPY proto proto
COPY node node
COPY coordinator coordinator
RUN python3 -m venv /opt/build \
 && offline="" && if ls /wheels/*.whl >/dev/null 2>&1; then offline="--no-index"; fi \
 && /opt/build/bin/pip wheel --quiet --disable-pip-version-check $offline --find-links /wheels \
      --wheel-dir /dist .

FROM ${BASE}
# etcd for the testbed's etcd members (the offline base has it already).
RUN command -v etcd >/dev/null || { apt-get update \
      && apt-get install -y --no-install-recommends etcd-server etcd-client \
      && rm -rf /var/lib/apt/lists/*; }
COPY --from=wheels /dist /dist
RUN python3 -m venv /opt/taskward \
 && /opt/taskward/bin/pip install --quiet --disable-pip-version-check --no-index --find-links /dist taskward \
 && rm -rf /dist \
 && useradd --system --uid 10001 --home-dir /var/lib/taskward --create-home taskward \
 && mkdir -p /var/lib/taskward/data && chown taskward:taskward /var/lib/taskward/data && chmod 700 /var/lib/taskward/data
ENV PATH=/opt/taskward/bin:$PATH PYTHONUNBUFFERED=1
USER taskward
WORKDIR /var/lib/taskward
# The node's gRPC health service (TASKWARD_LISTEN); the compose file sets one check per service.
HEALTHCHECK --interval=3s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-m", "taskward.healthcheck", "grpc"]
ENTRYPOINT ["taskward"]
CMD ["--help"]

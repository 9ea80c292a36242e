# One image for every shelfcast process (worker, optimizer, migrations); the command picks.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 shelfcast
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY streams streams
COPY forecasting forecasting
COPY optimizer optimizer
COPY shelfcast shelfcast
RUN pip install --no-cache-dir . && rm -rf /root/.cache
USER 10001
ENTRYPOINT ["shelfcast"]
CMD ["worker"]

# orderbot, distributed profile: one image for `serve`, `worker` and `sender`.
# Build: docker build -t orderbot .      Run: see compose.yaml
FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/orderbot \
 && /opt/orderbot/bin/pip install ".[distributed]"

FROM python:3.12-slim
ENV PATH=/opt/orderbot/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=3000 \
    LOG_FORMAT=json
COPY --from=build /opt/orderbot /opt/orderbot
RUN useradd --system --uid 10001 --home-dir /app --create-home orderbot
USER orderbot
WORKDIR /app
# Owned by orderbot, so a named volume mounted here (compose.yaml: uploads) is writable.
RUN mkdir -p /app/uploads
EXPOSE 3000
# The server's liveness; worker and sender get their own check in compose.yaml.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:3000/live', timeout=2).status == 200 else 1)"
ENTRYPOINT ["orderbot"]
CMD ["serve"]

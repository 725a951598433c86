# One image for workers and the operator (`herder worker …` / `kopf run -m herder_operator.handlers …`).
# Build: docker build -t herder:dev .            (add --build-arg WITH_CLAUDE=1 for the Claude Code CLI)
FROM python:3.11-slim AS base
ARG WITH_CLAUDE=0
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HERDER_LOG_FORMAT=json
RUN if [ "$WITH_CLAUDE" = "1" ]; then \
      apt-get update && apt-get install -y --no-install-recommends nodejs npm git ca-certificates \
      && npm install -g @anthropic-ai/claude-code && rm -rf /var/lib/apt/lists/* /root/.npm; \
    fi
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY operator ./operator
RUN pip install '.[operator]'
# Non-root, and nothing writable but /tmp (the chart mounts an emptyDir there: root fs is read-only).
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin herder
USER 65532:65532
ENTRYPOINT ["herder"]
CMD ["worker", "default"]

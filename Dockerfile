# One image for workers and the operator (`herder worker …` / `kopf run -m herder_operator.handlers …`).
# Build: docker build -t herder:dev .            (add --build-arg WITH_CLAUDE=1 for the Claude Code CLI)
FROM python:3.11-slim AS base
ARG WITH_CLAUDE=0
# The CLI is pinned: an unpinned install on Debian's Node 18 silently gets an old release
# (2.1.198 and later need Node >= 22, which comes from the `node` package on npm).
ARG CLAUDE_CODE_VERSION=2.1.332
ARG NODE_MAJOR=22
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HERDER_LOG_FORMAT=json
RUN if [ "$WITH_CLAUDE" = "1" ]; then \
      apt-get update && apt-get install -y --no-install-recommends nodejs npm git ca-certificates bubblewrap \
      && npm install -g "node@${NODE_MAJOR}" \
      && npm install -g "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" \
      && claude --version | grep -F "${CLAUDE_CODE_VERSION}" \
      && rm -rf /var/lib/apt/lists/* /root/.npm; \
    fi
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY operator ./operator
RUN pip install '.[operator]'
# Non-root, and nothing writable but /tmp and the workspace root (emptyDirs: root fs is read-only).
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin herder \
    && install -d -o root -g root -m 0755 /var/lib/herder \
    && install -d -o 65532 -g 65532 -m 0711 /var/lib/herder/claude
# Claude Code workspaces live there (root-owned parent: nobody can plant a CLAUDE.md above
# them); with a read-only root filesystem, mount an emptyDir on /var/lib/herder/claude.
USER 65532:65532
ENTRYPOINT ["herder"]
CMD ["worker", "default"]

# The bot as a container: slim Python, a non-root user, `chatops serve`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CHATOPS_HTTP_HOST=0.0.0.0 \
    CHATOPS_HTTP_PORT=3000

# pg_dump/pg_restore for /backup and /restore.
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY commands ./commands
COPY adapters ./adapters
COPY sandbox ./sandbox
COPY templates ./templates
RUN pip install . \
 && useradd --create-home --uid 10001 chatops

USER chatops
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('CHATOPS_HTTP_PORT', '3000')}/healthz\", timeout=2)" || exit 1
ENTRYPOINT ["chatops"]
CMD ["serve"]

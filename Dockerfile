# syntax=docker/dockerfile:1
# Build stage: a wheel and its dependencies, compiled where needed.
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip==25.3
COPY pyproject.toml README.md ./
COPY ingest ./ingest
COPY sql ./sql
COPY deploy/ingest.example.toml ./deploy/ingest.example.toml
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Final stage: no compilers, non-root, read-only friendly.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --no-create-home ingest
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/qualitydesk_ingest-*.whl && rm -rf /wheels
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
# Migrations run separately: `docker run IMAGE ingest migrate`.
CMD ["ingest", "serve", "--host", "0.0.0.0", "--port", "8080", "--no-migrate"]

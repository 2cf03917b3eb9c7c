# txlake worker image (first simple version; multi-stage hardening is tracked in its own issue).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TXLAKE_LAKE__ROOT=/data/lake \
    TXLAKE_DATADIR=/tmp/txlake

WORKDIR /opt/txlake
COPY pyproject.toml constraints.txt README.md ./
COPY app ./app
COPY agents ./agents
COPY models ./models
RUN pip install -c constraints.txt . \
 && useradd --uid 10001 --create-home txlake \
 && mkdir -p /data/lake && chown txlake /data/lake

USER 10001
EXPOSE 6066
ENTRYPOINT ["txlake"]
CMD ["worker"]

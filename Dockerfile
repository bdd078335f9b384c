# One image for all four services and for the provisioning step. The command
# picks the program, for example `python -m services.tokens`, and
# docker-compose.yml sets it per service.
FROM python:3.11.16-slim-bookworm

# The services bind 127.0.0.1 by default, which other containers cannot reach.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PAT_HTTP_HOST=0.0.0.0

RUN groupadd --system --gid 10001 pat \
    && useradd --system --uid 10001 --gid pat --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin pat

WORKDIR /app

# The lock file lists every distribution with its version, so --no-deps keeps
# pip from adding anything it does not list and `pip check` rejects a lock
# file that misses a dependency.
COPY requirements.lock ./
RUN pip install --no-deps --requirement requirements.lock

COPY pyproject.toml ./
COPY services ./services
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && pip check

# NOTE: the wheel built from pyproject.toml leaves out the SQL migrations
# (services/*/migrations/*.sql), because no package data is declared for them.
# `python -m` puts the working directory first on sys.path, so the services
# import the source tree in /app, which has the migrations. This check fails
# the build if that stops being true.
RUN python -c "from services.common.db import COMMON_MIGRATIONS as d; \
assert sorted(d.glob('*.sql')), f'no SQL migrations in {d}'"

# Numeric, so that a runtime can check that it is not root without a user
# database (Kubernetes runAsNonRoot, for one).
USER 10001:10001

# settings, profile, tokens and notifier listen on these ports by default.
EXPOSE 8101 8102 8103 8104

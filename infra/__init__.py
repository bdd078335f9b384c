"""Local Kafka, Postgres and SMTP servers for tests and the demo.

Start them with ``python -m infra up``; `infra.config.load()` returns the
addresses and credentials that clients use.
"""

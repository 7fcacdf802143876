#!/bin/sh
# As the official image's entrypoint: `bash -c ...`, `python ...` and `airflow ...` run as
# given; anything else is an Airflow command (`api-server`, `celery worker ...`).
case "$1" in
  bash|sh|python|python3|airflow) exec "$@" ;;
esac
exec airflow "$@"

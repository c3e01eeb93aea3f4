#!/usr/bin/env bash
# Shared helpers for scripts/run, scripts/test and scripts/bootstrap. Sourced, not executed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
mkdir -p var var/log

log() { printf '\033[1;34m[leadbot]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[leadbot] %s\033[0m\n' "$*" >&2; exit 1; }

# A working interpreter of the given minor version: PATH first, then pyenv, then the usual prefixes.
find_python() {
  local version="$1" candidate
  for candidate in "$(command -v "python$version" 2>/dev/null || true)" \
                   "$HOME"/.pyenv/versions/"$version".*/bin/"python$version" \
                   /root/.pyenv/versions/"$version".*/bin/"python$version" \
                   /usr/local/bin/"python$version" /usr/bin/"python$version"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c 'import sys, venv' >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

# A missing file hashes as empty (a lock file is optional until it is generated).
hash_files() { { cat "$@" 2>/dev/null || true; } | sha256sum | cut -c1-16; }

# Create a venv and install a requirements set pinned by its lock file; skipped when nothing changed.
ensure_venv() {
  local venv="$1" python_version="$2" requirements="$3" lock="$4"
  local python stamp want
  want="$(hash_files "$requirements" "$lock")"
  stamp="$venv/.leadbot-installed"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
    return 0
  fi
  if [ ! -x "$venv/bin/python" ]; then
    python="$(find_python "$python_version")" || die "Python $python_version is required (see README: prerequisites)"
    log "creating $venv with $python"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip wheel >/dev/null
  fi
  log "installing $requirements into $venv (pinned by $lock)"
  local constraint=()
  [ -f "$lock" ] && constraint=(-c "$lock")
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" "${constraint[@]}"
  # The repo itself is importable from both environments without an editable install.
  "$venv/bin/python" - "$ROOT" <<'PY'
import sys, sysconfig, pathlib
pathlib.Path(sysconfig.get_paths()["purelib"], "leadbot-repo.pth").write_text(sys.argv[1] + "\n")
PY
  echo "$want" > "$stamp"
}

bootstrap_envs() {
  ensure_venv .venv-rasa 3.10 requirements/rasa.in requirements/rasa.lock
  ensure_venv .venv 3.11 requirements/app.in requirements/app.lock
}

# PostgreSQL and Redis for tests and production-like runs: start them when they are not answering.
ensure_services() {
  if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    log "starting PostgreSQL"
    if command -v pg_ctlcluster >/dev/null; then
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    fi
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && break; sleep 1; done
    pg_isready -h 127.0.0.1 -p 5432 -q || die "PostgreSQL is not reachable on 127.0.0.1:5432"
  fi
  if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
    log "starting Redis"
    command -v redis-server >/dev/null || die "redis-server is not installed"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 20); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 0.5; done
  fi
}

# The Rasa model for the current config/domain/data (trained only when they changed); exported as RASA_MODEL.
ensure_model() {
  log "checking the Rasa model (training takes a few minutes when config, domain or data changed)"
  RASA_MODEL="$(.venv/bin/python -m leadbot.rasa_model)" || die "training the Rasa model failed"
  export RASA_MODEL
}

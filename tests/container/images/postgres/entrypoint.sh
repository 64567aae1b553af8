#!/bin/sh
# First start: a cluster with POSTGRES_USER (password POSTGRES_PASSWORD, scram) and POSTGRES_DB, listening on all
# of the container's addresses like the official image (`-c listen_addresses=...` narrows it). Then the command.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  user="${POSTGRES_USER:-postgres}"
  pwfile="$(mktemp)"
  printf '%s\n' "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}" >"$pwfile"
  initdb --username="$user" --pwfile="$pwfile" --auth-local=scram-sha-256 --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  db="${POSTGRES_DB:-$user}"
  if [ "$db" != postgres ]; then
    pg_ctl --silent --wait --options "-c listen_addresses=''" start
    PGPASSWORD="$POSTGRES_PASSWORD" psql --quiet --username="$user" --dbname=postgres \
      --command="CREATE DATABASE \"$db\" OWNER \"$user\""
    pg_ctl --silent --wait stop
  fi
fi
exec "$@"

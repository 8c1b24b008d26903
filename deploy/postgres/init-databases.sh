#!/usr/bin/env bash
# Run once by the postgres image (/docker-entrypoint-initdb.d) when the data volume is empty.
# Creates the application role and one database per service; each service is the only writer of
# its own database (DESIGN.md §2). The tables are created later by `mst-migrate all up`.
#
# Environment (set in docker-compose.yml):
#   POSTGRES_USER / POSTGRES_DB  superuser and its database (from the postgres image)
#   MST_DB_USER                  application role (default: mst)
#   MST_DB_PASSWORD              its password (required)
set -euo pipefail

: "${MST_DB_USER:=mst}"
: "${MST_DB_PASSWORD:?MST_DB_PASSWORD must be set}"

psql -v ON_ERROR_STOP=1 \
     --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-postgres}" \
     -v mst_user="$MST_DB_USER" -v mst_password="$MST_DB_PASSWORD" <<'SQL'
CREATE ROLE :"mst_user" LOGIN PASSWORD :'mst_password';

CREATE DATABASE mst_forms       OWNER :"mst_user" ENCODING 'UTF8' TEMPLATE template0;
CREATE DATABASE mst_instruction OWNER :"mst_user" ENCODING 'UTF8' TEMPLATE template0;
CREATE DATABASE mst_messagerie  OWNER :"mst_user" ENCODING 'UTF8' TEMPLATE template0;
CREATE DATABASE mst_oscars      OWNER :"mst_user" ENCODING 'UTF8' TEMPLATE template0;

-- Only the application role (and the superuser) may connect.
REVOKE CONNECT, TEMPORARY ON DATABASE mst_forms       FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE mst_instruction FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE mst_messagerie  FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE mst_oscars      FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE mst_forms       TO :"mst_user";
GRANT CONNECT, TEMPORARY ON DATABASE mst_instruction TO :"mst_user";
GRANT CONNECT, TEMPORARY ON DATABASE mst_messagerie  TO :"mst_user";
GRANT CONNECT, TEMPORARY ON DATABASE mst_oscars      TO :"mst_user";
SQL

echo "init-databases: role ${MST_DB_USER} and databases mst_forms, mst_instruction, mst_messagerie, mst_oscars created"

#!/bin/bash
# Run once by the official MySQL image on an empty data volume (/docker-entrypoint-initdb.d).
# The image itself creates $MYSQL_DATABASE (Dagster's instance storage) and $MYSQL_USER; this adds
# the pipeline's own database ($NARRATIVE_MYSQL_DB: filings, facts, taxonomy) for the same user,
# so Dagster's tables and ours never share a schema (both could ship an `alembic_version`).
set -euo pipefail
: "${NARRATIVE_MYSQL_DB:?NARRATIVE_MYSQL_DB is not set (see docker/.env.example)}"
: "${MYSQL_USER:?MYSQL_USER is not set (see docker/.env.example)}"
mysql --protocol=socket -uroot -p"${MYSQL_ROOT_PASSWORD}" <<SQL
CREATE DATABASE IF NOT EXISTS \`${NARRATIVE_MYSQL_DB}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
GRANT ALL PRIVILEGES ON \`${NARRATIVE_MYSQL_DB}\`.* TO '${MYSQL_USER}'@'%';
FLUSH PRIVILEGES;
SQL
echo "narrative: database ${NARRATIVE_MYSQL_DB} ready for ${MYSQL_USER}"

#!/bin/bash
# Run once by the postgres image's entrypoint, on an empty data directory.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v tasks_password="$TASKS_PASSWORD" -v notifications_password="$NOTIFICATIONS_PASSWORD" \
  -v audit_password="$AUDIT_PASSWORD" -v deadletters_password="$DEADLETTERS_PASSWORD" <<'SQL'
CREATE ROLE tasks LOGIN PASSWORD :'tasks_password';
CREATE DATABASE tasks OWNER tasks;
CREATE ROLE notifications LOGIN PASSWORD :'notifications_password';
CREATE DATABASE notifications OWNER notifications;
CREATE ROLE audit LOGIN PASSWORD :'audit_password';
CREATE DATABASE audit OWNER audit;
CREATE ROLE deadletters LOGIN PASSWORD :'deadletters_password';
CREATE DATABASE deadletters OWNER deadletters;
SQL

-- txlake warehouse: the database itself.
-- Applied by scripts/infra/mariadb.sh init (which substitutes `txlake` with $TXLAKE_MYSQL__DATABASE).
-- 02..04 never name the database, so they can be applied to any (e.g. per-test) database.
CREATE DATABASE IF NOT EXISTS `txlake`
  CHARACTER SET utf8mb4
  COLLATE utf8mb4_unicode_ci;

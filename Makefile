# Common tasks. The two a newcomer needs: `make demo` and `make test`.
.PHONY: check demo test unit bench bench-tables bench-export bench-lake up down install clean

install:            ## create .venv with the pinned dependencies
	bash scripts/bootstrap.sh

up:                 ## start Kafka and MariaDB (idempotent)
	bash scripts/infra/up.sh

down:               ## stop Kafka and MariaDB
	bash scripts/infra/down.sh

demo:               ## the main job end to end on local real services
	bash scripts/demo.sh

test:               ## install, start the services, run every test
	bash scripts/test.sh

check:              ## lint (ruff) and the layer contracts (import-linter); no services needed
	bash scripts/bootstrap.sh && .venv/bin/ruff check . && .venv/bin/lint-imports

unit:               ## unit tests only (no services)
	bash scripts/bootstrap.sh && .venv/bin/pytest tests/unit -q

bench:              ## the throughput benchmark (writes bench/results and the README table)
	bash scripts/bootstrap.sh && bash scripts/infra/up.sh && .venv/bin/python -m bench.run

bench-tables:       ## the table path: derivation throughput, produce-to-MySQL latency at 5,000 tx/s (bench/results/tables-*.json)
	bash scripts/bootstrap.sh && bash scripts/infra/up.sh && .venv/bin/python -m bench.tables

bench-export:       ## 5M-row ksqlDB table export into Parquet, then 1M rows into lake + MariaDB (writes bench/results/export-*.json)
	bash scripts/bootstrap.sh && bash scripts/infra/up.sh && .venv/bin/python -m bench.export_bench --rows 5000000 --warehouse-rows 1000000

bench-lake:         ## lake size against JSON before/after compaction (Snappy, ZSTD), compaction speed, landing beside compaction (bench/results/lake-*)
	bash scripts/bootstrap.sh && bash scripts/infra/up.sh && .venv/bin/python -m bench.lake

clean:              ## remove the demo lake and local worker state (not the services' data)
	rm -rf lake .infra/worker .infra/worker.log

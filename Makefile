# Common tasks. The two a newcomer needs: `make demo` and `make test`.
.PHONY: check demo test unit configdoc bench bench-tables bench-derived bench-delta bench-lake bench-export up down install clean

install:            ## create .venv with the pinned dependencies
	bash scripts/bootstrap.sh

up:                 ## start Kafka and MariaDB (idempotent)
	bash scripts/infra/up.sh

down:               ## stop Kafka and MariaDB
	bash scripts/infra/down.sh

demo:               ## the main job end to end on local real services (re-runnable: starts from a clean demo state)
	bash scripts/demo.sh

test:               ## install, start the services, run every test
	bash scripts/test.sh

check:              ## lint (ruff), the layer contracts (import-linter), types (mypy); no services needed (docs/development.md)
	bash scripts/bootstrap.sh && bash scripts/check.sh

unit:               ## unit tests only (no services)
	bash scripts/bootstrap.sh && .venv/bin/pytest tests/unit -q

configdoc:          ## regenerate docs/configuration.md and the chart's settings.json from the settings
	bash scripts/bootstrap.sh && .venv/bin/python -m app.ops.configdoc > docs/configuration.md && .venv/bin/python -m tools.chart_settings

bench:              ## the stream benchmark (writes bench/results/streams-LATEST.{json,md} and LATEST.md)
	bash scripts/bootstrap.sh && bash scripts/infra/up.sh && .venv/bin/python -m bench.run

bench-tables:       ## the table path: derivation throughput, produce-to-MySQL latency at 5,000 tx/s (bench/results/tables-LATEST.*)
	bash scripts/bootstrap.sh && bash scripts/infra/up.sh && .venv/bin/python -m bench.tables

bench-derived:      ## the derived streams' cost: worker CPU-µs per transaction with and without stream derivation, back to back (bench/results/derived-LATEST.*)
	bash scripts/bootstrap.sh && bash scripts/infra/up.sh && .venv/bin/python -m bench.derived

bench-delta:        ## Delta against hive Parquet: lake sink landing throughput back to back (bench/results/delta-LATEST.*)
	bash scripts/bootstrap.sh && .venv/bin/python -m bench.delta

bench-lake:         ## lake size against JSON before/after compaction (Snappy, ZSTD), compaction speed, landing beside compaction (bench/results/lake-LATEST.*)
	bash scripts/bootstrap.sh && bash scripts/infra/up.sh && .venv/bin/python -m bench.lake

bench-export:       ## 5M-row ksqlDB table export into Parquet, then 1M rows into lake + MariaDB (bench/results/export-LATEST.*)
	bash scripts/bootstrap.sh && bash scripts/infra/up.sh && .venv/bin/python -m bench.export_bench --rows 5000000 --warehouse-rows 1000000

clean:              ## remove what the demo made: its topics, consumer groups, database content, lake, worker state (services keep running)
	bash scripts/demo-reset.sh

"""Runs deploy/flink/kev.sql on Flink (PyFlink's local mini-cluster), optionally bounded.

Run by tests/tests/flink_sql.rs (and by hand: the README's Flink section) with PyPI
`apache-flink` (tests/python/flink-requirements.txt), whose local mini-cluster executes the
statements in one JVM, and the Kafka and avro-confluent SQL jars from Maven Central. Every
statement of the file runs, in order and unchanged but for these:

* the hosts: `kafka:9092` and `http://schema-registry:8081` become `--bootstrap` and
  `--registry`, as the README's `sed` line does for Kubernetes;
* with `--bounded` (the test), each source table (a `kafka` table with `scan.startup.mode`)
  gets `'scan.bounded.mode' = 'latest-offset'`: it reads to the end the topic had when the job
  started and then finishes, so windows close (a bounded source ends with the final watermark)
  and the job ends; without it the job runs until it is stopped, as the SQL client's would;
* `EXECUTE STATEMENT SET BEGIN ... END` is run as a statement set of the INSERTs inside it
  (what the SQL client does with it), and waited for.

Prints one JSON document: the statements run, by kind, and the seconds the job took.
"""

import argparse
import json
import re
import sys
import time

from pyflink.table import EnvironmentSettings, TableEnvironment

SET = re.compile(r"^SET\s+'([^']+)'\s*=\s*'([^']*)'$", re.S)


def statements(text):
    """The file's statements, comments dropped, split at a `;` that ends a line."""
    kept = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";[ \t]*\n", kept + "\n") if s.strip()]


def adapt(stmt, bootstrap, registry, bounded):
    stmt = stmt.replace("'kafka:9092'", f"'{bootstrap}'").replace("'http://schema-registry:8081'", f"'{registry}'")
    if bounded and stmt.startswith("CREATE TABLE") and "'scan.startup.mode'" in stmt:
        bounded_source = "'connector' = 'kafka',\n  'scan.bounded.mode' = 'latest-offset',"
        stmt = stmt.replace("'connector' = 'kafka',", bounded_source, 1)
    return stmt


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sql", required=True)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--jar", action="append", default=[], help="a connector or format jar (repeat)")
    p.add_argument("--bounded", action="store_true", help="read each source to its end now, then finish")
    args = p.parse_args()

    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    config = env.get_config()
    config.set("pipeline.jars", ";".join(f"file://{j}" for j in args.jar))
    config.set("parallelism.default", "1")
    ran = {"set": 0, "create_table": 0, "create_view": 0, "insert": 0}
    inserts, in_set = [], False
    started = time.time()
    for stmt in statements(open(args.sql, encoding="utf-8").read()):
        stmt = adapt(stmt, args.bootstrap, args.registry, args.bounded)
        if in_set:
            if stmt == "END":
                in_set = False
                continue
            if not stmt.startswith("INSERT INTO"):
                raise SystemExit(f"not an INSERT inside EXECUTE STATEMENT SET: {stmt[:80]}")
            inserts.append(stmt)
            continue
        m = SET.match(stmt)
        if m:
            config.set(m.group(1), m.group(2))
            ran["set"] += 1
        elif re.match(r"EXECUTE\s+STATEMENT\s+SET\s+BEGIN\s+", stmt):
            in_set = True
            inserts.append(re.sub(r"^EXECUTE\s+STATEMENT\s+SET\s+BEGIN\s+", "", stmt))
        elif stmt.startswith("CREATE TABLE"):
            env.execute_sql(stmt)
            ran["create_table"] += 1
        elif stmt.startswith("CREATE TEMPORARY VIEW"):
            env.execute_sql(stmt)
            ran["create_view"] += 1
        elif stmt.startswith("INSERT INTO"):
            env.execute_sql(stmt).wait()
            ran["insert"] += 1
        else:
            raise SystemExit(f"a statement this driver does not know: {stmt[:80]}")
    if in_set:
        raise SystemExit("EXECUTE STATEMENT SET without END")
    job_started = time.time()
    if inserts:
        statement_set = env.create_statement_set()
        for stmt in inserts:
            statement_set.add_insert_sql(stmt)
        statement_set.execute().wait()
        ran["insert"] += len(inserts)
    json.dump({"ran": ran, "job_seconds": time.time() - job_started, "seconds": time.time() - started}, sys.stdout)


if __name__ == "__main__":
    main()

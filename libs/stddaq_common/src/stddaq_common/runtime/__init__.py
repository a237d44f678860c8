"""Running a service: the runner, logs, stats (InfluxDB lines, Prometheus), argparse types."""

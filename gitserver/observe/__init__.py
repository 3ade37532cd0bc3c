"""What operators see: metrics, logs and their shippers (Kafka, Graphite), the running version."""

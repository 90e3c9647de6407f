"""Code shared by every SigVerify service: config, database, Kafka, gRPC serving, logging."""

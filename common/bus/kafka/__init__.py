"""Kafka backend of the bus (aiokafka), registered for ``kafka://``."""

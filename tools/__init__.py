"""Operator commands: ``binance-alerter up``, ``record``, ``replay``, ``backtest``.

The layer above the services: it may import their pure cores, never the reverse
(see docs/architecture.md).
"""

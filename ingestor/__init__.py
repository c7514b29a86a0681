"""Exchange websocket → ``ticks.{p}`` bus streams: the first service of the pipeline.

``parsing`` turns frames into ticks, ``publisher`` batches them per partition onto the bus,
``feed`` keeps the exchange connection alive, ``service`` wires them under one task group.
"""

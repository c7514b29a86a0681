"""One module per channel type; ``channels.registry`` builds a channel from its config."""

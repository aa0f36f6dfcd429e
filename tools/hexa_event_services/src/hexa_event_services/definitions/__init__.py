"""One module per service: how to install it, configure it, start it and probe it."""

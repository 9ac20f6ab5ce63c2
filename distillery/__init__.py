"""The `distillery` command: one entry point over the engine, the service and the client."""

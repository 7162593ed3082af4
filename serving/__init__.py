"""The REST scoring API (``fraudstream serve``): thin FastAPI wiring over fraudstream."""

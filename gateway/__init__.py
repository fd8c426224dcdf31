"""PlantBridge daemon: wiring, CLI, supervision, upstream delivery."""

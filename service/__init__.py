"""Visor serving: the engine, its backends and the HTTP (BentoML) and gRPC front-ends."""

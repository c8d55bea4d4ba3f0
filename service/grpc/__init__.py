"""The Open Inference Protocol v2 gRPC front-end: servicer, health, reflection, lifecycle."""

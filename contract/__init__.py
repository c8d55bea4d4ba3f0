"""What training writes and serving reads: model metadata, image decoding, calibration maths and
golden outputs. Imports neither ``training`` nor ``service``."""

# Generated from proto/streamer/v1 by scripts/genproto.py. Do not edit.
"""Generated gRPC contracts of Streamer (package streamer.v1)."""

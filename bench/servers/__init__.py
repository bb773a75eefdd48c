"""The baselines: bare servers built from the same libraries as Streamer, doing only the floor."""

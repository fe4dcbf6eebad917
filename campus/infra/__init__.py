"""Infrastructure: the stores and their locks, the transcoder, settings, logs, the clock, the request context,
background threads, what counts as a secret."""

"""ESPnet model classes for the decoder-only stack (subclasses of ESPnet's task models)."""

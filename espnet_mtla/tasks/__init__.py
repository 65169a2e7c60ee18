"""The tasks: ``specs`` is the task table (no ESPnet import); ``registration`` puts our
classes into ESPnet's task registries when imported. The model classes live in
``espnet_mtla.models``."""

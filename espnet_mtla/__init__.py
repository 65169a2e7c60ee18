"""espnet_mtla: efficient decoder-only speech and language models (MHA/MQA/GQA/MLA/MTLA) for ESPnet.

Importing the package is light: the attention library needs only torch. ESPnet itself is
loaded by the task/CLI modules that need it.
"""

__version__ = "0.1.0"

"""The line decoding jobs write per batch, and the pipeline reads from their logs for its progress
bar (``recipe.progress``): a protocol between them, in a module neither the library nor the runner owns."""

import re

DECODED = "decoded {done}/{total} utterances"
DECODED_RE = re.compile(r"decoded (\d+)/(\d+) utterances")

"""TensorFlow's start-up lines and Keras' conversion warning, kept off the user's console.

TensorFlow 2.19+ prints its C++ start-up notices (``oneDNN custom operations are on``, the
``absl::InitializeLog`` notice, the CPU-instructions note) through absl before its logging reads
``TF_CPP_MIN_LOG_LEVEL``, so that variable cannot hide them (tensorflow/tensorflow#100442). They
are written to file descriptor 2 while TensorFlow is imported: here that import runs with the
descriptor captured, and every captured line that is not one of those notices is written back,
so a real warning stays visible.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from types import ModuleType

START_UP_NOTICES = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on"
    r"|cpu_feature_guard|To enable the following instructions|rebuild TensorFlow with"
)
# Keras' functional models warn when OpenVINO's converter calls them with their one input in a
# tuple; the converted graph is the same (tests/cnn/test_backbones.py compares it with Keras).
CONVERSION_WARNING = r"The structure of `inputs` doesn't match the expected structure"


@contextlib.contextmanager
def _native_stderr_filtered() -> Iterator[None]:
    """Descriptor 2 (where C++ writes) goes to a file while open; kept lines are replayed."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(True) if not START_UP_NOTICES.search(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def import_keras() -> ModuleType:
    """``keras`` (and TensorFlow under it), imported without TensorFlow's start-up notices."""
    if "keras" not in sys.modules:
        with _native_stderr_filtered():
            import keras  # noqa: F401
    return sys.modules["keras"]


@contextlib.contextmanager
def converting() -> Iterator[None]:
    """Around ``openvino.convert_model`` of a Keras model: without Keras' structure warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CONVERSION_WARNING, category=UserWarning)
        yield

"""Test-wide settings, applied before anything imports transformers (also inherited by nbmake kernels).

- No network: the Hub is switched off, so an accidental download fails fast.
- The `tiny` profile unless COURSE_PROFILE says otherwise.
- Results, figures and outputs go to a temporary folder, never over the committed reference run.
"""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("COURSE_PROFILE", "tiny")
os.environ.setdefault("COURSE_ARTIFACTS", tempfile.mkdtemp(prefix="course-artifacts-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

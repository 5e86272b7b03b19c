"""Test-wide settings, applied before anything imports transformers (also inherited by nbmake kernels).

- No network: the Hub is switched off, so an accidental download fails fast.
- The `tiny` profile unless COURSE_PROFILE says otherwise.
- Results, figures and outputs go to a temporary folder, never over the committed reference run.
- The network is blocked (tests/netblock/sitecustomize.py) in this process and in every notebook kernel.
"""

import os
import runpy
import tempfile
from pathlib import Path

_NETBLOCK = str(Path(__file__).parent / "tests" / "netblock")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_NETBLOCK, os.environ.get("PYTHONPATH", "")) if p)
runpy.run_path(str(Path(_NETBLOCK) / "sitecustomize.py"))  # this process too, not only the kernels it starts

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("COURSE_PROFILE", "tiny")
os.environ.setdefault("COURSE_ARTIFACTS", tempfile.mkdtemp(prefix="course-artifacts-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

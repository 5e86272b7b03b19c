"""The package's two layers and the one direction between them (README, *Layout*; ``tests/test_layers.py``).

- **Lesson layer** (:data:`LESSON`): what a notebook imports to learn: loading models and data, evaluation,
  comparison and plots, the trainers' recipes, the miniatures' tested copies, the measuring harness.
- **Build layer** (:data:`BUILD`): what makes the course run on a student's hardware and hand artifacts from one
  notebook to the next: profiles and hardware, the Colab install, the model cache, manifests and reuse, child
  processes, the results format, the Hub fixtures, the claims check, the solutions runner.

A build module may import any module. A lesson module, and a notebook cell, takes from the build layer only the
names in :data:`BUILD_API` (the profile, where files go, the results file, the pipeline's hand-overs, the folder
checks behind clear error messages). What still crosses the line is listed in :data:`CROSSINGS`, each with where it
goes; the test fails on a new crossing, and on a listed one that is gone, so the list only shrinks.
"""

from __future__ import annotations

LESSON = ("bnb", "comparison", "data", "dpo", "evaluation", "grpo", "hub_data", "measure", "models", "plots", "qlora",
          "quant", "serving", "skills", "stats", "text", "training")
BUILD = ("__init__", "artifacts", "claims", "colab", "cost", "errors", "exercises", "forkserver", "hardware",
         "hub_fixtures", "isolated", "layers", "manifests", "model_cache", "paths", "pipeline", "processes", "profiles",
         "results")

BUILD_API = {
    "__init__": ("Profile", "get_profile", "setup"),
    "profiles": ("PROFILES", "Profile", "get_profile", "takes_profile"),
    "errors": ("DataError", "ModelLoadError", "OutputPathError", "RowError"),
    # where the profile's model is (a cached folder, or a Hub id) and what identifies its weights
    "model_cache": ("INSTALL_HINT", "base_fingerprint", "model_path", "packaged_gguf", "packaged_model_dir",
                    "tiny_model_dir"),
    "paths": ("DATA_DIR", "REPO_ROOT", "artifacts_root", "figures_dir", "outputs_dir", "results_dir",
              # the folder checks behind the lessons' error messages
              "as_sentence", "check_replaceable", "local_folder_problem", "read_config_json", "saved_model_problem"),
    "results": ("UNITS", "peak_cuda_mb", "peak_memory_mb", "peak_rss_mb", "read_results", "reset_variant_peak", "runtime",
                "weights_id", "write_results"),
    "pipeline": ("dpo_merged", "earlier_rows", "grpo_merged", "handover", "loftq_start", "quantized", "quantized_with",
                 "sft_adapter", "sft_merged",
                 "show_source", "train_isolated"),   # scripts/sft.py run in a fresh process (06), and its code shown
    "artifacts": ("verify",),   # a saved folder's checksums, checked before loading it (a clear error if damaged)
    "colab": ("install",),
    "exercises": ("run_solutions",),
    "hardware": ("matmul_gflops",),
}

# Lesson code that still reaches into the build layer, by where it is, with where it goes: none is left, and a
# new one fails tests/test_layers.py (add the name to BUILD_API only when it is an entry point a lesson needs).
CROSSINGS: dict[str, tuple[str, ...]] = {}

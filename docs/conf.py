"""Sphinx configuration of the snn-ostl documentation (``make docs``).

The build must pass under ``-W`` without network: intersphinx is left out (the machines that
build these docs reach no documentation server), and every tutorial in ``tutorials/`` is
executed by sphinx-gallery on every build, so a tutorial that breaks fails the build.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import torch

import snn_ostl

# The tutorials run inside this process with tiny tensors: one thread is as fast as two for them,
# and it cannot stall when another process is busy on the second core.
torch.set_num_threads(1)

project = "snn-ostl"
author = "the snn-ostl developers"
copyright = "2025, the snn-ostl developers"
release = snn_ostl.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "ostl_registry",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_tutorials/*.ipynb"]
root_doc = "index"

# --- autodoc / autosummary / napoleon ---------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_class_signature = "separated"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Attributes sections become fields of the class, so they never clash with autodoc's members.
napoleon_use_ivar = True
napoleon_use_rtype = False


# --- sphinx-gallery ----------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../tutorials",
    "gallery_dirs": "auto_tutorials",
    # Every script is a tutorial and every tutorial runs.
    "filename_pattern": r"\.py$",
    "ignore_pattern": r"__init__\.py",
    "abort_on_example_error": True,
    "run_stale_examples": True,
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "min_reported_time": 1,
    "show_signature": False,
}

# --- HTML --------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"snn-ostl {release}"
html_static_path = ["_static"]

"""Sphinx configuration of the snn-ostl documentation (``make docs``).

The build must pass under ``-W`` without network, and the pages it writes must work without
network too: intersphinx is left out (the build may reach no documentation server), MathJax is
served from ``_static/mathjax`` (``sphinx-mathjax-offline``) instead of a CDN, and
sphinx-gallery's computation-times page (which loads jQuery and DataTables from CDNs) is not
written. Every tutorial in ``tutorials/`` is executed by sphinx-gallery on every build, so a
tutorial that breaks fails the build. ``tests/test_docs_html.py`` checks the built pages.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

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
    # Copies MathJax 3 into _static/mathjax and points mathjax_path there: formulas render
    # without network. (The module's name has dashes; Sphinx imports it all the same.)
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "ostl_registry",
    # Charts of the benchmarks and results pages, drawn at build time from the pages' own tables
    # (docs/_ext/doc_charts.py): ``.. plot::`` blocks, PNG only, no source links.
    "matplotlib.sphinxext.plot_directive",
]

templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "auto_tutorials/*.ipynb",
    # Left behind by earlier builds (ignored by git, so they survive in a checkout): the
    # computation-times pages, which load scripts from CDNs and are no longer written, and the
    # autosummary stubs of names that api.rst now documents on the page itself.
    "sg_execution_times.rst",
    "auto_tutorials/sg_execution_times.rst",
    "generated/snn_ostl.OSTL.rst",
    "generated/snn_ostl.VARIANTS.rst",
    "generated/snn_ostl.LEARNING_SIGNALS.rst",
]
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
    # The computation-times page loads jQuery and DataTables from CDNs: not written.
    "write_computation_times": False,
}

# --- charts (matplotlib's plot directive) -------------------------------------------------------
plot_formats = [("png", 110)]
plot_html_show_formats = False
plot_html_show_source_link = False
plot_include_source = False

# --- HTML --------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"snn-ostl {release}"
html_static_path = ["_static"]
# Tables wrap inside the content column, output blocks wrap: see _static/snn_ostl.css.
html_css_files = ["snn_ostl.css"]


# --- docstrings that say nothing about snn-ostl --------------------------------------------------
def _import_dotted(name: str) -> Any:
    """The object at a dotted path (``snn_ostl.SNU``), or None."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _is_type_docstring(obj: Any, lines: list[str]) -> bool:
    """True when ``lines`` are the docstring of ``type(obj)`` (a tuple's "Built-in ...")."""
    doc = inspect.getdoc(type(obj))
    return bool(doc) and [line.strip() for line in lines if line.strip()] == [
        line.strip() for line in doc.splitlines() if line.strip()
    ]


def _drop_foreign_docstrings(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Keep torch's and Python's boilerplate out of the API pages.

    - A method that snn-ostl overrides without a docstring of its own (``SNU.forward``,
      ``SNU.__init__``) would show the docstring of ``torch.nn.Module``'s method ("Define the
      computation performed at every call..."): it keeps its signature and loses that text.
    - A module-level constant would show the docstring of its type (a tuple: "Built-in immutable
      sequence."); ``api.rst`` gives the constants their own text.
    - A named tuple's fields would say "Alias for field number 0"; the class's Attributes
      section already describes them.
    """
    if not lines:
        return
    if what in {"data", "attribute"} and _is_type_docstring(obj, lines):
        lines.clear()
        return
    if what == "attribute" and lines[0].startswith("Alias for field number"):
        lines.clear()
        return
    if what not in {"method", "property"}:
        return
    func = getattr(obj, "fget", obj)
    func = getattr(func, "__func__", func)
    if getattr(func, "__doc__", None) is not None:
        return  # its own docstring
    owner_name, _, attr = name.rpartition(".")
    owner = _import_dotted(owner_name)
    if not isinstance(owner, type):
        return
    for base in owner.__mro__[1:]:
        member = base.__dict__.get(attr)
        if member is not None and getattr(member, "__doc__", None):
            if not base.__module__.startswith("snn_ostl"):
                lines.clear()
            return


#: Overrides of torch.nn.Module methods that a reader still needs to see, docstring or not: the
#: call and the constructor (their signatures).
_MODULE_METHODS_SHOWN = {"forward", "__init__"}


def _skip_boilerplate_members(
    app: Any, what: str, name: str, obj: Any, skip: bool, options: Any
) -> bool | None:
    """Leave out members that only repeat torch's or Python's generated documentation.

    - An undocumented override of a ``torch.nn.Module`` method other than ``forward`` and
      ``__init__`` (``SNU.extra_repr``): nothing to say beyond torch's own docs.
    - A named tuple's generated ``__new__`` ("Create new instance of ...").
    """
    func = getattr(obj, "__func__", obj)
    if (
        what == "class"
        and name not in _MODULE_METHODS_SHOWN
        and inspect.isfunction(func)
        and func.__doc__ is None
        and hasattr(torch.nn.Module, name)
    ):
        return True
    if name == "__new__" and (getattr(obj, "__doc__", None) or "").startswith(
        "Create new instance of"
    ):
        return True
    return None


def setup(app: Any) -> None:
    app.connect("autodoc-process-docstring", _drop_foreign_docstrings)
    app.connect("autodoc-skip-member", _skip_boilerplate_members)

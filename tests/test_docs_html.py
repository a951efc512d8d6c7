"""What a reader of the built documentation sees, checked on ``docs/_build/html``.

The checks of the built pages run when ``make docs`` has been run (they are skipped otherwise):
no error boxes, no formula left as raw TeX, no word about how the project is made instead of what
it does, nothing loaded from another server (the pages must work offline), and the CSS that keeps
wide tables inside the content column. Only the pages of the current build are read (the
``docnames`` of ``searchindex.js``), so pages left behind by an earlier build do not count.

The runnable snippets of the documentation (the front page's quickstart and the class example of
:class:`snn_ostl.OSTL`) are executed whether or not the HTML has been built.
"""

from __future__ import annotations

import json
import re
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HTML = DOCS / "_build" / "html"

needs_build = pytest.mark.skipif(
    not (HTML / "searchindex.js").is_file(),
    reason="docs/_build/html does not exist (or is incomplete): run `make docs` first",
)

#: Words about how the project is built rather than what it does (matched case-insensitively in
#: the rendered prose, never in code).
PROCESS_WORDS = (
    r"\bSPEC\b",
    r"spec §",
    r"shared folder",
    r"lent machine",
    r"previous session",
    r"session's",
    r"2-core machine",
)

#: Elements whose text is prose, where TeX must have been handed to MathJax.
_PROSE_TAGS = {"p", "li", "td", "th", "dd", "dt", "h1", "h2", "h3", "h4", "figcaption", "caption"}
#: Elements whose text is never prose: code, and formulas MathJax typesets.
_SKIP_TAGS = {"pre", "code", "script", "style", "kbd", "samp", "tt"}
_VOID_TAGS = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
}  # fmt: skip


def _is_math(tag: str, attrs: dict[str, str]) -> bool:
    classes = attrs.get("class", "").split()
    return tag in {"span", "div"} and "math" in classes


class _Page(HTMLParser):
    """Collects a page's prose (outside code and formulas), its admonitions and its assets."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []  # (tag, inside code or math)
        self.prose: list[str] = []  # text of prose elements, one string per element
        self._open_prose: list[list[str]] = []
        self.errors: list[str] = []
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.has_math = False

    def _skipping(self) -> bool:
        return bool(self.stack) and self.stack[-1][1]

    def handle_starttag(self, tag: str, attr_list: list[tuple[str, str | None]]) -> None:
        attrs = {k: v or "" for k, v in attr_list}
        classes = attrs.get("class", "").split()
        if tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        if tag == "link" and "stylesheet" in attrs.get("rel", "").split():
            self.stylesheets.append(attrs.get("href", ""))
        if ("admonition" in classes and "error" in classes) or "system-message" in classes:
            self.errors.append(f"<{tag} class={attrs.get('class')!r}>")
        if "contents" in classes and (
            "this-will-duplicate-information-and-it-is-still-useful-here" not in classes
        ):
            # furo paints a red "ERROR: Adding a table of contents ..." box over it.
            self.errors.append(f"a `.. contents::` block (<{tag} class={attrs.get('class')!r}>)")
        if _is_math(tag, attrs):
            self.has_math = True
        if tag in _VOID_TAGS:
            return
        skip = self._skipping() or tag in _SKIP_TAGS or _is_math(tag, attrs)
        self.stack.append((tag, skip))
        if tag in _PROSE_TAGS:
            self._open_prose.append([])

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID_TAGS:
            return
        if all(open_tag != tag for open_tag, _ in self.stack):
            return  # a stray end tag
        # Close up to the matching tag (HTML allows some end tags to be left out).
        while self.stack:
            open_tag, _ = self.stack.pop()
            if open_tag in _PROSE_TAGS and self._open_prose:
                self.prose.append("".join(self._open_prose.pop()))
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._open_prose and not self._skipping():
            for texts in self._open_prose:
                texts.append(data)


def _docnames() -> list[str]:
    text = (HTML / "searchindex.js").read_text(encoding="utf-8")
    match = re.search(r'"docnames":(\[.*?\])', text)
    assert match, "searchindex.js holds no docnames: is the build complete?"
    return json.loads(match.group(1))


_PAGES: dict[str, tuple[str, _Page]] = {}


def _pages() -> dict[str, tuple[str, _Page]]:
    """``{docname: (raw html, parsed page)}`` for every page of the current build."""
    if not _PAGES:
        for name in _docnames():
            path = HTML / f"{name}.html"
            assert path.is_file(), f"{path} is missing although the build lists it"
            raw = path.read_text(encoding="utf-8")
            page = _Page()
            page.feed(raw)
            page.close()
            _PAGES[name] = (raw, page)
    return _PAGES


def _report(problems: dict[str, list[str]]) -> str:
    return "\n".join(f"{name}: {'; '.join(found[:5])}" for name, found in problems.items())


@needs_build
def test_the_build_has_the_pages_a_reader_starts_from():
    names = set(_docnames())
    for name in ("index", "install", "supported", "limits", "theory", "api"):
        assert name in names, name
    assert any(name.startswith("auto_tutorials/") for name in names)


@needs_build
def test_no_error_boxes():
    problems = {name: page.errors for name, (_, page) in _pages().items() if page.errors}
    assert not problems, "error admonitions or system messages:\n" + _report(problems)


@needs_build
def test_no_raw_tex_in_prose():
    delimiters = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$")
    problems = {}
    for name, (_, page) in _pages().items():
        found = [text.strip()[:80] for text in page.prose if delimiters.search(text)]
        if found:
            problems[name] = found
    assert not problems, "TeX delimiters outside formulas and code:\n" + _report(problems)


@needs_build
def test_formulas_render_with_the_mathjax_shipped_in_the_build():
    problems = {}
    pages_with_math = 0
    for name, (_, page) in _pages().items():
        if not page.has_math:
            continue
        pages_with_math += 1
        mathjax = [src for src in page.scripts if "mathjax" in src.lower()]
        if not mathjax:
            problems[name] = ["formulas but no MathJax script"]
            continue
        for src in mathjax:
            local = (HTML / name).parent / src.split("?")[0]
            if "://" in src or not local.is_file():
                problems.setdefault(name, []).append(f"MathJax from {src}")
    assert pages_with_math, "no page has a formula: the theory page should"
    assert not problems, "MathJax not served from the build:\n" + _report(problems)


@needs_build
def test_no_process_words_in_prose():
    pattern = re.compile("|".join(PROCESS_WORDS), re.IGNORECASE)
    problems = {}
    for name, (_, page) in _pages().items():
        found = [m.group(0) for text in page.prose for m in pattern.finditer(text)]
        if found:
            problems[name] = found
    assert not problems, "words about how the project is made:\n" + _report(problems)


@needs_build
def test_no_asset_from_another_server():
    # On the raw HTML, so that tags inside raw-HTML blocks (which a parser may read as text)
    # are caught too.
    external = re.compile(
        r"<script\b[^>]*\bsrc=[\"']?(?:https?:)?//"
        r"|<link\b[^>]*\bhref=[\"']?(?:https?:)?//[^>]*>"
        r"|@import\s+(?:url\()?[\"']?(?:https?:)?//",
        re.IGNORECASE,
    )
    problems = {}
    for name, (raw, _) in _pages().items():
        found = [
            m.group(0)[:100]
            for m in external.finditer(raw)
            if not m.group(0).lower().startswith("<link")
            or re.search(r"rel=[\"']?(stylesheet|preload|modulepreload)", m.group(0), re.I)
        ]
        if found:
            problems[name] = found
    assert not problems, "scripts or stylesheets from another server:\n" + _report(problems)


@needs_build
def test_tables_and_output_blocks_are_made_to_wrap():
    css = HTML / "_static" / "snn_ostl.css"
    assert css.is_file(), "the build lacks _static/snn_ostl.css (html_css_files in docs/conf.py)"
    text = re.sub(r"/\*.*?\*/", "", css.read_text(encoding="utf-8"), flags=re.S)
    rules = dict(
        (selector.strip(), body) for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", text)
    )
    table = [body for selector, body in rules.items() if "table.docutils" in selector]
    assert any("max-width: 100%" in body for body in table), "no rule keeps tables in the column"
    assert any("overflow-wrap" in body for body in table), "no rule wraps text in table cells"
    output = [body for selector, body in rules.items() if "sphx-glr-script-out" in selector]
    assert any("pre-wrap" in body for body in output), "no rule wraps the tutorials' output"
    for name in ("index", "supported", "limits"):
        _, page = _pages()[name]
        assert any(
            href.split("?")[0].endswith("_static/snn_ostl.css") for href in page.stylesheets
        ), name
    supported, _ = _pages()["supported"]
    assert "ostl-supported" in supported, "the supported-modules table lost its CSS class"


# ----------------------------------------------------------------------------- runnable snippets
def _tested_blocks(path: Path) -> list[str]:
    """Python code blocks right after a ``.. tested by tests/test_docs_html.py`` comment."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(
        r"^(?P<indent>[ ]*)\.\. tested by tests/test_docs_html\.py[^\n]*\n\s*\n"
        r"(?P=indent)\.\. code-block:: python\n\s*\n"
        r"(?P<body>(?:(?P=indent)[ ]{3}[^\n]*\n|[ \t]*\n)+)",
        re.M,
    )
    return [textwrap.dedent(m.group("body")) for m in pattern.finditer(text)]


@pytest.mark.parametrize("page", ["index.rst", "api.rst"])
def test_tested_snippets_run(page, capsys):
    pytest.importorskip("snntorch")
    blocks = _tested_blocks(DOCS / page)
    assert blocks, f"docs/{page} lost its tested code block"
    for code in blocks:
        exec(compile(code, str(DOCS / page), "exec"), {})
    out = capsys.readouterr().out
    assert "presynaptic" in out  # the summary of an snnTorch Leaky with defaults


def test_front_page_has_what_a_new_reader_needs():
    text = (DOCS / "index.rst").read_text(encoding="utf-8")
    for needed in (
        "https://doi.org/10.1109/TNNLS.2022.3194896",
        "https://snntorch.readthedocs.io",
        "https://norse.github.io/norse/",
        "pip install",
        ".. figure::",
    ):
        assert needed in text, needed

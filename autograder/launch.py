"""What a launch button opens: every URL from `repository.url`, the Colab setup cell, the chapter notebooks.

One setting, ``repository.url`` (and ``repository.branch``) in ``_config.yml``, gives

- the book's Binder and Colab buttons (sphinx-book-theme reads it; ``book/_ext/course_launch.py`` checks
  that every button opens a notebook that exists in the repository),
- the setup cell that starts every launched notebook: on Colab it clones the course and installs the helper
  package (``setup_cell``; ``python -m autograder release`` puts it in each exercise),
- the chapter notebooks ``book/**/<page>.ipynb``, generated from the MyST pages next to them
  (``python -m autograder notebooks``): Colab opens only ``.ipynb`` files, and Binder's JupyterLab shows
  MyST Markdown as plain text,
- the online book's address (GitHub Pages, ``.github/workflows/book.yml``), which the notebooks link to.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import nbformat
import yaml

# The course's root, found from this file alone: the student edition ships this module (its book build checks
# the launch buttons with it) without the rest of the instructor's package.
REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "_config.yml"
TOC = REPO / "_toc.yml"
SETUP_TAG = "course-setup"          # the setup cell's tag: release and the generator replace, never duplicate
COLAB_CLONE = "/content/rlhf-course"


@dataclass(frozen=True)
class Repository:
    url: str        # https://github.com/<owner>/<name>, no trailing slash, no .git
    branch: str

    @property
    def owner_and_name(self) -> tuple[str, str]:
        parts = urlsplit(self.url).path.strip("/").split("/")
        return parts[0], parts[1]

    @property
    def pages_url(self) -> str:
        """Where .github/workflows/book.yml publishes the book: https://<owner>.github.io/<name>/."""
        owner, name = self.owner_and_name
        if name.lower() == f"{owner.lower()}.github.io":            # a user or organisation site
            return f"https://{owner.lower()}.github.io/"
        return f"https://{owner.lower()}.github.io/{name}/"


def repository(config: Path = CONFIG) -> Repository:
    """`repository.url` and `repository.branch` of _config.yml: the one setting every URL derives from."""
    settings = (yaml.safe_load(Path(config).read_text()) or {}).get("repository") or {}
    return github_repository(settings.get("url"), settings.get("branch"), where=f"{config}: repository.url")


def github_repository(url, branch=None, where: str = "repository.url") -> Repository:
    """A Repository for `url` (normalised: no trailing slash or .git), or ValueError naming `where` it came from."""
    url = str(url or "").strip().removesuffix("/").removesuffix(".git")
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.netloc != "github.com" or len(parts.path.strip("/").split("/")) != 2:
        raise ValueError(f"{where} must be https://github.com/<owner>/<name> "
                         f"(Colab opens notebooks from GitHub only), not {url!r}")
    return Repository(url=url, branch=str(branch or "main"))


# --------------------------------------------------------------------------------------------- setup cell
SETUP_SOURCE = '''\
# Setup for Google Colab: fetch the course and install its helper package (about a minute, once per
# session). Anywhere else this cell does nothing: Binder installs the course by itself, and on your own
# machine `make venv` in the course folder does (README, "For students").
import sys

if "google.colab" in sys.modules:
    import importlib, importlib.util, os, subprocess

    COURSE_URL = "{url}"  # repository.url in _config.yml
    CLONE = "{clone}"
    for command, needed in (
            (["git", "clone", "--quiet", "--depth", "1", "--branch", "{branch}", COURSE_URL, CLONE],
             not os.path.isdir(CLONE)),
            ([sys.executable, "-m", "pip", "install", "--quiet", CLONE + "[colab]"],
             importlib.util.find_spec("rlhf_course") is None)):
        if needed:
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{{' '.join(command)}} failed:\\n{{done.stdout}}{{done.stderr}}")
    importlib.invalidate_caches(){chdir}
'''


def setup_cell_source(workdir: str | None = None, repo: Repository | None = None) -> str:
    """The setup cell's code. `workdir` (relative to the repository root) is where a chapter's code expects
    to run (its data/ folder); exercises pass None and keep the working directory they were opened in."""
    repo = repo or repository()
    chdir = f'\n    os.chdir(CLONE + "/{workdir}")  # where this page reads its data' if workdir else ""
    return SETUP_SOURCE.format(url=repo.url, branch=repo.branch, clone=COLAB_CLONE, chdir=chdir).rstrip("\n")


def setup_cell(workdir: str | None = None, repo: Repository | None = None) -> nbformat.NotebookNode:
    # remove-cell: the book's exercise pages leave it out (it matters only to a launched notebook).
    return nbformat.v4.new_code_cell(setup_cell_source(workdir, repo), id=SETUP_TAG,
                                     metadata={"tags": [SETUP_TAG, "remove-cell"]})


def add_setup_cell(nb: nbformat.NotebookNode, workdir: str | None = None, repo: Repository | None = None,
                   position: int = 1) -> nbformat.NotebookNode:
    """Put the setup cell at `position` (default: after the title and introduction), replacing an old one."""
    nb.cells = [c for c in nb.cells if SETUP_TAG not in c.get("metadata", {}).get("tags", [])]
    nb.cells.insert(position, setup_cell(workdir, repo))
    return nb


# -------------------------------------------------------------------------------------- chapter notebooks
def toc_docnames(toc: Path = TOC) -> list[str]:
    """Every page of the table of contents, in book order, as written there ("book/ppo/gae", the root first)."""
    files = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    files.append(node[key])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load(Path(toc).read_text()))
    return files


def chapter_pages(toc: Path = TOC) -> list[Path]:
    """The MyST pages of the table of contents that are notebooks (a kernelspec): they get launch buttons."""
    pages = [REPO / (f if f.endswith(".md") else f + ".md") for f in toc_docnames(toc)]
    return [p for p in pages if p.is_file() and re.search(r"^kernelspec:", _front_matter(p.read_text()), re.M)]


def _front_matter(text: str) -> str:
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    return match.group(1) if match else ""


def notebook_path(page: Path) -> Path:
    return page.with_suffix(".ipynb")


@lru_cache(maxsize=None)
def _bibliography() -> dict[str, tuple[str, str]]:
    """citation key -> (authors as cited: "Schulman et al.", year), from the book's .bib files."""
    from pybtex.database import parse_file

    config = yaml.safe_load(CONFIG.read_text()) or {}
    out = {}
    for bib in config.get("bibtex_bibfiles") or []:
        for key, entry in parse_file(str(REPO / bib)).entries.items():
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            last = [" ".join(p.last_names).replace("{", "").replace("}", "") for p in people]
            names = (last[0] if len(last) == 1 else f"{last[0]} and {last[1]}" if len(last) == 2
                     else f"{last[0]} et al." if last else entry.fields.get("title", key))
            out[key] = (names, entry.fields.get("year", "n.d."))
    return out


@lru_cache(maxsize=None)
def _equation_pages() -> dict[str, Path]:
    """equation label -> the book page that numbers it ($$ ... $$ (label), or a math directive's :label:)."""
    out = {}
    for page in sorted((REPO / "book").rglob("*.md")):
        for label in re.findall(r"^\$\$[ \t]*\(([\w-]+)\)[ \t]*$|^:label:[ \t]*([\w-]+)", page.read_text(), re.M):
            out[label[0] or label[1]] = page
    return out


def _equation_ref(label: str, page: Path, repo: Repository) -> str:
    """(label): the equation's tag on this page; on another page, a link to it in the online book."""
    where = _equation_pages().get(label)
    if where is None or where == page:
        return f"({label})"
    return f"[({label})]({repo.pages_url}{where.relative_to(REPO).with_suffix('.html').as_posix()}#equation-{label})"


def _cite(kind: str, keys: str) -> str:
    bib = _bibliography()
    cited = [bib.get(k.strip(), (k.strip(), "?")) for k in keys.split(",")]
    if kind == "t":
        return "; ".join(f"{names} ({year})" for names, year in cited)
    return "(" + "; ".join(f"{names}, {year}" for names, year in cited) + ")"


def _page_title(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem


def _book_link(target: str, page: Path, repo: Repository) -> str:
    """A relative link of the page (`../ppo/gae.md`, `x.ipynb#part-a`) as an address in the online book."""
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve().relative_to(REPO).with_suffix(".html").as_posix()
    return repo.pages_url + resolved + (f"#{anchor}" if anchor else "")


ADMONITION = re.compile(r"^```\{(note|warning|tip|important|caution|admonition)\}[ \t]*([^\n]*)\n(.*?)^```[ \t]*$",
                        re.M | re.S)
FENCE = re.compile(r"^(```+|~~~+)(?!\{).*?^\1[ \t]*$", re.M | re.S)   # a plain code block: left alone


def markdown_for_jupyter(text: str, page: Path, repo: Repository) -> str:
    """MyST markdown of a book page -> Markdown that Jupyter and Colab render (CommonMark + $ math).

    Roles and directives have no meaning outside Sphinx: equation references become the equation's label,
    which each display equation shows as its tag; citations become "Author et al. (year)"; links to other
    pages point to the online book; notes and warnings become block quotes.
    """
    def admonition(match):
        kind, title, body = match.group(1), match.group(2).strip(), match.group(3)
        body = "\n".join(line for line in body.splitlines() if not re.match(r"^:\w+:", line))
        head = title if kind == "admonition" and title else kind.capitalize()
        return "\n".join(["> **" + head.rstrip(".") + ".**", ">"] + ["> " + line if line else ">"
                                                               for line in body.strip("\n").splitlines()])

    def prose(chunk: str) -> str:
        chunk = ADMONITION.sub(admonition, chunk)
        chunk = re.sub(r"^\$\$[ \t]*\(([\w-]+)\)[ \t]*$", r"\\tag{\1}$$", chunk, flags=re.M)  # $$ ... $$ (label)
        chunk = re.sub(r"\{eq\}`([\w-]+)`", lambda m: _equation_ref(m.group(1), page, repo), chunk)
        chunk = re.sub(r"\{cite(?::(t|p))?\}`([^`]+)`", lambda m: _cite(m.group(1) or "p", m.group(2)), chunk)
        chunk = re.sub(r"\{doc\}`(?:([^`<]+?)\s*<)?([^`>]+)>?`",
                       lambda m: f"[{m.group(1) or _page_title((page.parent / m.group(2)).with_suffix('.md'))}]"
                                 f"({_book_link(m.group(2) + '.md', page, repo)})", chunk)
        chunk = re.sub(r"\{(?:ref|numref|term)\}`(?:([^`<]+?)\s*<[^`>]+>|([^`]+))`",
                       lambda m: m.group(1) or m.group(2), chunk)
        chunk = re.sub(r"^\([\w-]+\)=[ \t]*\n", "", chunk, flags=re.M)                 # (label)= targets
        return re.sub(r"\]\(((?!\w+:)[^)\s]+\.(?:md|ipynb)(?:#[\w-]+)?)\)",
                      lambda m: f"]({_book_link(m.group(1), page, repo)})", chunk)

    out, start = [], 0
    # Admonitions may hold code blocks of their own: convert them before setting plain code blocks aside.
    text = ADMONITION.sub(lambda m: prose(m.group(0)), text)
    for block in FENCE.finditer(text):
        out += [prose(text[start:block.start()]), block.group(0)]
        start = block.end()
    return "".join(out + [prose(text[start:])])


def _cell_id(source: str, taken: set[str]) -> str:
    """A cell id from the cell's content, so that regenerating a page changes only the cells that changed."""
    base = hashlib.sha1(source.encode()).hexdigest()[:8]
    cell_id, n = base, 1
    while cell_id in taken:
        cell_id, n = f"{base}-{n}", n + 1
    taken.add(cell_id)
    return cell_id


def chapter_notebook(page: Path, repo: Repository | None = None) -> nbformat.NotebookNode:
    """The runnable notebook of a MyST page: its cells in Jupyter's dialect, the setup cell after the title."""
    from myst_nb.core.read import read_myst_markdown_notebook

    repo = repo or repository()
    page = Path(page).resolve()
    rel = page.relative_to(REPO)
    source = read_myst_markdown_notebook(page.read_text())
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": source.metadata["kernelspec"],
                                            "language_info": {"name": "python"}})
    cells, taken = [], set()
    for cell in source.cells:
        if cell.cell_type == "markdown":
            text = markdown_for_jupyter(cell.source, page, repo).strip("\n")
            if text:
                cells.append(nbformat.v4.new_markdown_cell(text))
            continue
        meta = dict(cell.metadata)
        if "hide-input" in meta.get("tags", []):
            meta["jupyter"] = {"source_hidden": True}          # JupyterLab folds it, as the book does
        cells.append(nbformat.v4.new_code_cell(cell.source, metadata=meta))
        caption = ((meta.get("mystnb") or {}).get("figure") or {}).get("caption")
        if caption:
            cells.append(nbformat.v4.new_markdown_cell(
                f"*Figure: {markdown_for_jupyter(caption.strip(), page, repo)}*"))
    # The title, a note on where the notebook comes from, the setup cell, then the page.
    note = nbformat.v4.new_markdown_cell(
        f"*The runnable version of [{_page_title(page)}]({repo.pages_url}{rel.with_suffix('.html').as_posix()}) "
        f"in the book, generated from `{rel.as_posix()}` by `python -m autograder notebooks`: edit that file, "
        f"not this one. On Colab, run the setup cell below first.*")
    first = cells[0].source if cells and cells[0].cell_type == "markdown" else ""
    title, _, rest = first.partition("\n")
    if title.startswith("# "):
        cells[0].source = title
        if rest.strip():
            cells.insert(1, nbformat.v4.new_markdown_cell(rest.strip("\n")))
        cells.insert(1, note)
        position = 2
    else:
        cells.insert(0, note)
        position = 1
    nb.cells = cells
    add_setup_cell(nb, workdir=rel.parent.as_posix(), repo=repo, position=position)
    for cell in nb.cells:
        if cell.get("id") != SETUP_TAG:
            cell.id = _cell_id(cell.cell_type + cell.source, taken)
    return nb


def notebook_text(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def write_chapter_notebooks(check: bool = False) -> list[Path]:
    """(Re)write book/**/<page>.ipynb for every chapter page; with check=True write nothing.
    Returns the notebooks that were (or, checking, would be) changed."""
    repo = repository()
    changed = []
    for page in chapter_pages():
        path, text = notebook_path(page), notebook_text(chapter_notebook(page, repo))
        if not path.exists() or path.read_text() != text:
            changed.append(path)
            if not check:
                path.write_text(text)
    return changed


# ------------------------------------------------------------------------------------------ launch URLs
PLACEHOLDER_HOSTS = re.compile(r"(^|\.)(example\.(com|org|net|edu)|localhost|[\w-]+\.(test|invalid|example))$")


def launch_target_problem(url: str, repo: Repository | None = None, root: Path = REPO) -> str | None:
    """Why a launch button's URL would not open a runnable notebook of this repository, or None if it would.

    Binder: .../v2/gh/<owner>/<name>/<branch>?urlpath=lab/tree/<path>; Colab:
    .../github/<owner>/<name>/blob/<branch>/<path>; JupyterHub (nbgitpuller): ...?repo=...&urlpath=...
    """
    repo = repo or repository()
    owner, name = repo.owner_and_name
    parts = urlsplit(url)
    if PLACEHOLDER_HOSTS.search(parts.hostname or ""):
        return f"{url}: {parts.hostname} is a placeholder host"
    query = parse_qs(parts.query)
    if "/v2/gh/" in parts.path:                                               # Binder
        where = parts.path.split("/v2/gh/", 1)[1].split("/")
        if where[:3] != [owner, name, repo.branch]:
            return f"{url}: Binder builds {'/'.join(where[:3])}, not {owner}/{name}/{repo.branch}"
        path = re.sub(r"^(lab/tree|tree|notebooks)/", "", (query.get("urlpath") or [""])[0])
    elif "/github/" in parts.path:                                            # Colab
        where = parts.path.split("/github/", 1)[1].split("/")
        if where[:4] != [owner, name, "blob", repo.branch]:
            return f"{url}: Colab opens {'/'.join(where[:4])}, not {owner}/{name}/blob/{repo.branch}"
        path = "/".join(where[4:])
    elif parts.path.endswith("/git-pull"):                                    # JupyterHub + nbgitpuller
        if (query.get("repo") or [""])[0] != repo.url:
            return f"{url}: nbgitpuller pulls {query.get('repo')}, not {repo.url}"
        path = re.sub(r"^(lab/tree|tree)/[^/]+/", "", (query.get("urlpath") or [""])[0])
    else:
        return f"{url}: not a Binder, Colab or JupyterHub launch URL"
    path = unquote(path)
    if not path.endswith(".ipynb"):
        return f"{url}: opens {path!r}, which Colab cannot open and JupyterLab shows as text (not .ipynb)"
    if not (root / path).is_file():
        return f"{url}: {path} does not exist in the repository"
    return None

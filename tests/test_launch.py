"""Launch buttons open runnable notebooks of this repository; every URL comes from repository.url; the Colab
setup cell installs on Colab only; explorers say so when they are a static preview (issue 10, items 2, 3, 15)."""
import contextlib
import importlib.util
import io
import os
import re
import subprocess
import sys
import tomllib
import types
from pathlib import Path
from unittest import mock

import nbformat
import pytest
import yaml

from autograder.launch import (CONFIG, SETUP_TAG, Repository, chapter_notebook, chapter_pages, launch_target_problem,
                               markdown_for_jupyter, notebook_path, notebook_text, repository, setup_cell_source)
from conftest import REPO

REPO_SETTING = repository()
EXERCISES = sorted((REPO / "exercises").glob("*/*.ipynb"))
PAGES = chapter_pages()


# ------------------------------------------------------------------------------------------- launch URLs
class _Config(dict):
    __getattr__ = dict.__getitem__


def theme_launch_urls(tmp_path: Path, pagename: str, suffix: str, config_yml: Path = CONFIG) -> list[str]:
    """The launch URLs sphinx-book-theme itself puts on a page, from Jupyter Book's translation of _config.yml
    (the theme's own html-page-context handler, called with just the app and context it reads)."""
    from jupyter_book.config import get_final_config
    from sphinx_book_theme.header_buttons import update_context_with_repository_info
    from sphinx_book_theme.header_buttons.launch import add_launch_buttons

    sphinx_config, _ = get_final_config(user_yaml=yaml.safe_load(config_yml.read_text()),
                                        cli_config={"latex_individualpages": False}, sourcedir=REPO)
    config = _Config(html_theme_options=sphinx_config["html_theme_options"], html_context={})
    app = types.SimpleNamespace(builder=None, config=config, outdir=str(tmp_path / "html"),
                                env=types.SimpleNamespace(doc2path=lambda name: str(REPO / f"{name}{suffix}"),
                                                          metadata={pagename: {"kernelspec": {"name": "python3"}}}))
    update_context_with_repository_info(app)
    executed = tmp_path / "jupyter_execute" / f"{pagename}.ipynb"   # what myst-nb leaves for the download menu
    executed.parent.mkdir(parents=True, exist_ok=True)
    executed.write_text("{}")
    context = {"header_buttons": [], "pagename": pagename, "sourcename": f"{pagename}{suffix}",
               "page_source_suffix": suffix, **config.html_context}
    add_launch_buttons(app, pagename, "page.html", context, None)
    return [b["url"] for group in context["header_buttons"] for b in group.get("buttons", [])]


def _toc_notebooks() -> list[tuple[str, str]]:
    """(docname, source suffix) of every page with launch buttons: chapter pages and exercises."""
    pages = [(p.relative_to(REPO).with_suffix("").as_posix(), ".md") for p in PAGES]
    return pages + [(p.relative_to(REPO).with_suffix("").as_posix(), ".ipynb") for p in EXERCISES]


@pytest.mark.parametrize("pagename,suffix", _toc_notebooks())
def test_launch_buttons_open_this_pages_notebook(tmp_path, pagename, suffix):
    urls = theme_launch_urls(tmp_path, pagename, suffix)
    hosts = sorted(re.match(r"https://([^/]+)", u).group(1) for u in urls)
    # Binder and Colab; no JupyterHub button while launch_buttons.jupyterhub_url is empty.
    assert hosts == ["colab.research.google.com", "mybinder.org"], urls
    for url in urls:
        assert launch_target_problem(url) is None, launch_target_problem(url)
        assert url.endswith(f"{pagename}.ipynb"), f"{url} does not open {pagename}.ipynb"


def test_chapter_pages_and_exercises_are_all_checked():
    assert len(PAGES) >= 17 and len(EXERCISES) >= 6
    assert all(notebook_path(p).is_file() for p in PAGES)


def test_launch_check_catches_what_does_not_launch(tmp_path):
    repo = REPO_SETTING
    owner, name = repo.owner_and_name
    binder = f"https://mybinder.org/v2/gh/{owner}/{name}/{repo.branch}?urlpath=lab/tree/"
    colab = f"https://colab.research.google.com/github/{owner}/{name}/blob/{repo.branch}/"
    assert launch_target_problem(binder + "book/ppo/clipping.ipynb") is None
    assert launch_target_problem(colab + "exercises/ppo/ppo.ipynb") is None
    assert "not .ipynb" in launch_target_problem(binder + "book/ppo/clipping.md")       # the bug
    assert "not .ipynb" in launch_target_problem(colab + "book/ppo/clipping.md")
    assert "does not exist" in launch_target_problem(colab + "book/ppo/no_such_page.ipynb")
    assert "Colab opens someone-else/" in launch_target_problem(colab.replace(f"/{owner}/", "/someone-else/")
                                                                 + "exercises/ppo/ppo.ipynb")
    assert "Binder builds" in launch_target_problem(binder.replace(f"/{repo.branch}?", "/gh-pages?")
                                                    + "exercises/ppo/ppo.ipynb")
    hub = ("https://hub.example.edu/hub/user-redirect/git-pull?repo=" + repo.url
           + f"&urlpath=lab/tree/{name}/exercises/ppo/ppo.ipynb&branch={repo.branch}")
    assert "placeholder" in launch_target_problem(hub)
    assert launch_target_problem(hub.replace("hub.example.edu", "hub.university.ac.uk")) is None
    # The theme with the configuration: the placeholder hub button comes back, and is caught.
    placeholder = tmp_path / "_config.yml"
    placeholder.write_text(CONFIG.read_text().replace('jupyterhub_url: ""', "jupyterhub_url: https://hub.example.edu"))
    urls = theme_launch_urls(tmp_path, "exercises/ppo/ppo", ".ipynb", config_yml=placeholder)
    assert [u for u in urls if launch_target_problem(u)] == [u for u in urls if "example.edu" in u] != []


def test_the_build_checks_every_launch_button():
    # book/_ext/course_launch.py is loaded by the build and warns (-W: fails) on a bad button.
    config = yaml.safe_load(CONFIG.read_text())
    assert config["sphinx"]["local_extensions"] == {"course_launch": "book/_ext"}
    assert config["launch_buttons"]["jupyterhub_url"] == "", "a JupyterHub button only when a hub is configured"
    source = (REPO / "book/_ext/course_launch.py").read_text()
    assert "launch_target_problem" in source and "LOGGER.warning" in source and "book/**.ipynb" in source


# ------------------------------------------------------------------------------------ chapter notebooks
@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_chapter_notebook_is_generated_from_its_page(page):
    path = notebook_path(page)
    assert path.is_file() and path.read_text() == notebook_text(chapter_notebook(page)), \
        f"{path.relative_to(REPO)} is out of date with {page.name}: run `python -m autograder notebooks` and commit it"


MYST_LEFTOVER = re.compile(r"\{[a-z:-]+\}`|^```\{|^:::\{|^\$\$[ \t]*\(|\]\((?!https?:)[^)\s]*\.(?:md|ipynb)\b|^\([\w-]+\)=",
                           re.M)


def myst_leftovers(nb) -> list[str]:
    return [m.group(0) for c in nb.cells if c.cell_type == "markdown" for m in MYST_LEFTOVER.finditer(c.source)]


def test_chapter_notebooks_speak_jupyter_markdown():
    bad = {p.name: found for p in PAGES if (found := myst_leftovers(nbformat.read(notebook_path(p), as_version=4)))}
    assert not bad, f"MyST syntax that Jupyter and Colab show as text: {bad}"


def test_myst_conversion_and_its_check_can_fail():
    page = REPO / "book/ppo/clipping.md"
    myst = ("See {eq}`eq-ppo-clip` and {cite:t}`schulman2017proximal`, [GAE](gae.md), {doc}`../rlhf_update_rules`.\n\n"
            "$$\nx = 1\n$$ (eq-x)\n\n```{note}\nA note.\n```\n\n```python\n# {eq}`kept` in code\n```\n")
    fake = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(myst)])
    assert len(myst_leftovers(fake)) >= 5                        # the check sees raw MyST
    out = markdown_for_jupyter(myst, page, REPO_SETTING)
    assert "(eq-ppo-clip)" in out and r"\tag{eq-x}$$" in out and "> **Note.**" in out
    assert re.search(r"Schulman et al\. \(2017\)", out)
    assert f"]({REPO_SETTING.pages_url}book/ppo/gae.html)" in out
    assert f"[RLHF update rules]({REPO_SETTING.pages_url}book/rlhf_update_rules.html)" in out
    assert "# {eq}`kept` in code" in out                         # code blocks are left alone
    converted = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(out.replace("# {eq}`kept` in code", ""))])
    assert myst_leftovers(converted) == []


def test_generated_notebooks_are_not_pages_of_the_book():
    # The build excludes them: book/ppo/clipping.ipynb must not compete with book/ppo/clipping.md.
    from sphinx.util.matching import Matcher

    sys.path.insert(0, str(REPO / "book/_ext"))
    try:
        import course_launch
    finally:
        sys.path.pop(0)
    config = types.SimpleNamespace(exclude_patterns=[])
    course_launch._exclude_generated_notebooks(None, config)
    matcher = Matcher(config.exclude_patterns)
    assert matcher("book/ppo/clipping.ipynb") and matcher("book/rlhf_update_rules.ipynb")
    assert not matcher("book/ppo/clipping.md") and not matcher("exercises/ppo/ppo.ipynb")


# ------------------------------------------------------------------------------------------ setup cell
def run_setup_cell(source: str, on_colab: bool) -> dict:
    """Execute a setup cell with subprocess.run and os.chdir recorded instead of run, google.colab faked, and the
    course not yet installed (as on a fresh Colab runtime)."""
    calls = {"run": [], "chdir": []}
    real_find_spec = importlib.util.find_spec

    def fake_run(command, **kwargs):
        calls["run"].append(list(command))
        return subprocess.CompletedProcess(command, 0, "", "")

    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(sys.modules), mock.patch.object(subprocess, "run", fake_run), \
            mock.patch.object(os, "chdir", lambda path: calls["chdir"].append(str(path))), \
            mock.patch.object(importlib.util, "find_spec",
                              lambda name, *a: None if name == "rlhf_course" else real_find_spec(name, *a)), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        sys.modules.pop("google.colab", None)
        if on_colab:
            sys.modules["google.colab"] = types.ModuleType("google.colab")
        exec(compile(source, "<setup cell>", "exec"), {})
    calls["stdout"], calls["stderr"] = out.getvalue(), err.getvalue()
    return calls


def setup_problems(source: str, workdir: str | None) -> list[str]:
    """What is wrong with a setup cell: silent and inert off Colab; on Colab, clone this repository's branch,
    install it with the colab extra, and (chapters) work in the page's folder."""
    problems = []
    off = run_setup_cell(source, on_colab=False)
    if off["run"] or off["chdir"] or off["stdout"] or off["stderr"]:
        problems.append(f"does something outside Colab: {off}")
    on = run_setup_cell(source, on_colab=True)
    clone = [c for c in on["run"] if c[:2] == ["git", "clone"]]
    pip = [c for c in on["run"] if c[1:4] == ["-m", "pip", "install"]]
    if not clone or REPO_SETTING.url not in clone[0] or REPO_SETTING.branch not in clone[0]:
        problems.append(f"does not clone {REPO_SETTING.url} ({REPO_SETTING.branch}): {on['run']}")
    if not pip or not pip[0][-1].endswith("[colab]"):
        problems.append(f"does not install the course with its colab extra: {on['run']}")
    if workdir and (not on["chdir"] or not on["chdir"][-1].endswith("/" + workdir)):
        problems.append(f"does not move to {workdir}: {on['chdir']}")
    if not workdir and on["chdir"]:
        problems.append(f"moves an exercise away from where it was opened: {on['chdir']}")
    return problems


def _first_code_cell(path: Path):
    return next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")


@pytest.mark.parametrize("path", EXERCISES + [notebook_path(p) for p in PAGES],
                         ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_launched_notebook_starts_with_the_setup_cell(path):
    cell = _first_code_cell(path)
    assert SETUP_TAG in cell.metadata.get("tags", []), f"{path.name}: the first code cell is not the setup cell"
    workdir = path.parent.relative_to(REPO).as_posix() if path.parts[len(REPO.parts)] == "book" else None
    assert cell.source == setup_cell_source(workdir), f"{path.name}: stale setup cell (run release / notebooks)"
    assert setup_problems(cell.source, workdir) == []
    assert workdir is None or (REPO / workdir).is_dir()


def test_setup_check_can_fail():
    assert setup_problems(setup_cell_source("book/ppo"), "book/ppo") == []
    assert setup_problems(setup_cell_source(None), None) == []
    unguarded = "import subprocess, sys\nsubprocess.run([sys.executable, '-m', 'pip', 'install', 'x[colab]'])"
    assert any("outside Colab" in p for p in setup_problems(unguarded, None))
    noisy = setup_cell_source(None).replace("import sys\n", "import sys\nprint('installing', file=sys.stderr)\n", 1)
    assert any("outside Colab" in p for p in setup_problems(noisy, None))     # nbgrader would score 0 on stderr
    other = setup_cell_source(None, Repository("https://github.com/someone/else", "main"))
    assert any("does not clone" in p for p in setup_problems(other, None))
    assert any("does not move" in p for p in setup_problems(setup_cell_source(None), "book/ppo"))


def test_no_placeholder_url_is_left_for_students():
    for path in sorted(REPO.glob("solutions/*/*.ipynb")) + EXERCISES:
        assert "<the course's repository URL>" not in path.read_text(), path


def test_colab_extra_pins_what_requirements_pin():
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["colab"]
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        spec = line.split("#")[0].strip()
        if spec:
            pins[re.split(r"[=<>!~ ]", spec)[0].lower()] = spec.replace(" ", "")
    for spec in extra:
        name = re.split(r"[=<>!~ ]", spec)[0].lower()
        assert pins.get(name) == spec.replace(" ", ""), f"colab extra {spec!r} vs requirements.txt {pins.get(name)!r}"
    assert "torch" not in {re.split(r"[=<>!~ ]", s)[0] for s in extra}, "keep Colab's own CUDA torch"


# -------------------------------------------------------------------------------- one setting, publishing
def foreign_urls(text: str, repo: Repository) -> list[str]:
    """GitHub, Colab, Binder and Pages URLs in a text that name another repository than `repo`."""
    owner, name = repo.owner_and_name
    found = re.findall(r"https://(?:github\.com|colab\.research\.google\.com/github|mybinder\.org/v2/gh)/([\w.-]+)/([\w.-]+)"
                       r"|https://([\w-]+)\.github\.io/([\w.-]+)", text)
    bad = []
    for gh_owner, gh_name, pages_owner, pages_name in found:
        if gh_owner and (gh_owner, gh_name.removesuffix(".git")) != (owner, name):
            bad.append(f"{gh_owner}/{gh_name}")
        if pages_owner and (pages_owner, pages_name) != (owner.lower(), name):
            bad.append(f"{pages_owner}.github.io/{pages_name}")
    return bad


def test_readme_urls_come_from_the_one_setting():
    readme = (REPO / "README.md").read_text()
    assert REPO_SETTING.url in readme and REPO_SETTING.pages_url in readme
    assert foreign_urls(readme, REPO_SETTING) == []
    assert foreign_urls(readme, Repository("https://github.com/someone/else", "main")) != []   # can fail


def test_pages_workflow_builds_and_deploys_the_book_for_this_repository():
    workflow = yaml.safe_load((REPO / ".github/workflows/book.yml").read_text())
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    runs = "\n".join(s.get("run", "") for s in steps)
    uses = [s.get("uses", "") for s in steps]
    assert "make book" in runs and "autograder notebooks --check" in runs
    assert "from autograder.launch import repository" in runs, "the repository URL must come from _config.yml"
    assert "github.repository" in runs and "exit 1" in runs
    assert any(u.startswith("actions/upload-pages-artifact") for u in uses)
    assert any(s.get("with", {}).get("path") == "_build/html" for s in steps)
    assert any(u.startswith("actions/deploy-pages") for u in uses)
    assert workflow["jobs"]["deploy"]["permissions"] == {"pages": "write", "id-token": "write"}


@pytest.mark.parametrize("repository, event, ref, refused", [
    ("{owner_name}", "push", "{branch}", None),                         # this repository: deploys
    ("{owner_name}", "pull_request", "a-feature", None),                 # a pull request builds, never deploys
    ("someone/fork", "push", "{branch}", "repository.url is"),          # a fork that kept the setting
    ("{owner_name}", "push", "other", "repository.branch is"),          # a push of another branch
])
def test_the_workflows_own_repository_check_runs_and_refuses_another_repository(repository, event, ref, refused):
    # The step's shell script itself, with the values GitHub would put in its ${{ ... }} expressions.
    workflow = yaml.safe_load((REPO / ".github/workflows/book.yml").read_text())
    step = next(s for s in workflow["jobs"]["build"]["steps"] if "from autograder.launch import repository" in
                s.get("run", ""))
    owner_name = REPO_SETTING.url.removeprefix("https://github.com/")
    values = {"github.server_url": "https://github.com",
              "github.repository": repository.format(owner_name=owner_name),
              "github.event_name": event, "github.ref_name": ref.format(branch=REPO_SETTING.branch)}
    script = re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", lambda m: values[m.group(1)], step["run"])
    script = script.replace(".venv/bin/python", sys.executable)
    proc = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    if refused is None:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    else:
        assert proc.returncode == 1 and f"::error file=_config.yml::{refused}" in proc.stdout, proc.stdout


def test_make_serve_serves_the_built_book_and_installs_nothing():
    dry = subprocess.run(["make", "-n", "serve"], cwd=REPO, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "http.server" in dry.stdout and "_build/html" in dry.stdout
    assert not re.search(r"pip|venv|requirements", dry.stdout), f"make serve would install: {dry.stdout}"


# ----------------------------------------------------------------------------------------------- widgets
def test_explorer_is_an_honest_static_preview_and_live_in_a_notebook():
    import ipywidgets as widgets
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rlhf_course.explorer import STATIC_NOTE, explore

    def make_controls():
        return {"d": widgets.FloatSlider(value=0.5, min=0.05, max=3, step=0.05, description="drift δ"),
                "mean": widgets.Checkbox(value=False, description="use the batch mean instead of b"),
                "A": widgets.ToggleButtons(options=[("A = +1", 1.0), ("A = −1", -1.0)], description="advantage")}

    def show(d, mean, A):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, d * A])
        ax.set_title(f"δ = {d:.2f}")
        plt.show()

    alt = "A line to δ·A = {d:.2f}·{A:+.0f}"
    controls = make_controls()
    static = explore(show, controls, alt=alt, static=True)
    note, row, figure = static.children
    assert note.value == STATIC_NOTE and "Static preview" in note.value
    assert all(c.disabled for c in controls.values()), "a static page's controls must not move"
    assert 'alt="A line to δ·A = 0.50·+1"' in figure.value and figure.value.startswith("<img ")
    for c in controls.values():
        assert c.style.description_width == "initial", "labels are cut off ('temperat…') at the default width"
    assert controls["d"].layout.min_width and controls["mean"].indent is False
    assert row.layout.flex_flow == "row wrap"

    controls = make_controls()
    live = explore(show, controls, alt=alt, static=False)
    assert len(live.children) == 2 and not any(c.disabled for c in controls.values())
    controls["d"].value = 1.25
    assert 'alt="A line to δ·A = 1.25·+1"' in live.children[-1].value, "moving a slider must redraw the figure"


def test_explorer_default_follows_the_book_build(monkeypatch):
    from rlhf_course.explorer import STATIC_BOOK_ENV, static_book

    monkeypatch.setenv(STATIC_BOOK_ENV, "1")
    assert static_book()
    monkeypatch.delenv(STATIC_BOOK_ENV)
    assert not static_book()
    source = (REPO / "book/_ext/course_launch.py").read_text()
    # the build's extension sets the explorer's own variable (imported, so the two names cannot drift apart)
    assert "from rlhf_course.explorer import STATIC_BOOK_ENV" in source and "os.environ[STATIC_BOOK_ENV] = \"1\"" in source


def raw_widget_calls(markdown: str) -> list[str]:
    """Widgets a page shows without the explorer helper: in the static book they would move and lie."""
    return re.findall(r"widgets\.(?:interactive_output|interactive|interact)\(|^\s*interact\(", markdown, re.M)


def test_every_explorer_goes_through_the_helper():
    pages = {p.relative_to(REPO).as_posix(): p.read_text() for p in sorted(REPO.glob("book/**/*.md"))}
    assert sum("explore(" in text for text in pages.values()) >= 7
    bad = {name: found for name, text in pages.items() if (found := raw_widget_calls(text))}
    assert not bad, f"use rlhf_course.explorer.explore: {bad}"
    assert raw_widget_calls("explorer = widgets.interactive_output(show, {})") != []      # can fail


def test_widget_javascript_names_the_sliders():
    config = yaml.safe_load(CONFIG.read_text())
    scripts = config["sphinx"]["config"]["nb_ipywidgets_js"]
    assert list(scripts)[-1] == "widget-a11y.js" and (REPO / "book/_static/widget-a11y.js").is_file()
    js = (REPO / "book/_static/widget-a11y.js").read_text()
    assert '[role="slider"]' in js and "aria-label" in js



def test_binder_installs_the_cpu_torch_and_the_course_package():
    """Binder reads binder/ only (repo2docker); PyPI's Linux torch wheel there would be the CUDA build."""
    lines = [ln.split("#")[0].strip() for ln in (REPO / "binder/requirements.txt").read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines and "-r ../requirements.txt" in lines
    [root_pin] = [ln.split("#")[0].strip() for ln in (REPO / "requirements.txt").read_text().splitlines()
                  if ln.startswith("torch==")]
    assert f"{root_pin}+cpu" in lines, f"binder/requirements.txt must pin {root_pin}+cpu"
    post_build = REPO / "binder/postBuild"
    assert os.access(post_build, os.X_OK) and "pip install --no-deps -e ." in post_build.read_text()
    assert not (REPO / "postBuild").exists(), "repo2docker ignores root files when binder/ exists"

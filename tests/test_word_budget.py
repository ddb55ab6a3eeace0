"""Each lesson is short enough to read in one sitting: ≤ 2,000 words of prose (issue 21).

The prose of a master notebook is its markdown outside the optional appendix, that is the markdown cells
before the first heading containing "Going further" or "Appendix" (the same cells that
``test_prose_numbers`` checks), counted as whitespace-separated tokens, maths and code spans included.
Engineering and benchmark material (machine lines, budgets, strategies, tables) belongs in the appendix or
in docs/RESULTS.md, not in the lesson. ``python tests/test_word_budget.py`` prints every master's count.
"""
from __future__ import annotations

import pytest

from metalib.assignments import masters
from test_prose_numbers import lesson_cells

MAX_LESSON_WORDS = 2000


def lesson_words(path) -> int:
    """Whitespace-separated tokens of the markdown cells before the notebook's appendix."""
    return sum(len(source.split()) for _, source in lesson_cells(path))


def test_the_count_stops_at_the_appendix(tmp_path):
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Title\n\nthree more words"),
        nbformat.v4.new_code_cell("x = 'code is not prose at all'"),
        nbformat.v4.new_markdown_cell("last lesson words\n\n## Going further (optional)\n\nnot counted here"),
        nbformat.v4.new_markdown_cell("appendix prose is not counted either"),
    ])
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert lesson_words(path) == 5 + 3


@pytest.mark.parametrize("master", masters(), ids=lambda m: m.stem)
def test_lesson_prose_fits_the_budget(master):
    words = lesson_words(master)
    assert words <= MAX_LESSON_WORDS, (
        f"{master.name} has {words} words of lesson prose (at most {MAX_LESSON_WORDS}): cut repetition and wordy "
        f"sentences, and move engineering detail (machines, budgets, tables) to its 'Going further' appendix "
        f"or to docs/RESULTS.md")


if __name__ == "__main__":
    for master in masters():
        print(f"{lesson_words(master):6d}  {master.name}")

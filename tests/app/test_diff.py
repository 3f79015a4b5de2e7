"""The token alignment (fusers.diff) on known sequences, and the diff view that shows it."""

from __future__ import annotations

import pytest

from fusers.diff import DELETE, EQUAL, INSERT, REPLACE, align, first_divergence, summarize


def kinds(a, b):
    return [(op.kind, op.a, op.b) for op in align(a, b)]


@pytest.mark.parametrize("a, b, expected", [
    ([1, 2, 3], [1, 2, 3], [(EQUAL, 0, 0), (EQUAL, 1, 1), (EQUAL, 2, 2)]),
    ([1, 2, 3], [1, 9, 3], [(EQUAL, 0, 0), (REPLACE, 1, 1), (EQUAL, 2, 2)]),
    ([1, 2, 3], [1, 2, 4, 3], [(EQUAL, 0, 0), (EQUAL, 1, 1), (INSERT, None, 2), (EQUAL, 2, 3)]),
    ([1, 2, 3, 4], [1, 3, 4], [(EQUAL, 0, 0), (DELETE, 1, None), (EQUAL, 2, 1), (EQUAL, 3, 2)]),
    ([], [5, 6], [(INSERT, None, 0), (INSERT, None, 1)]),
    ([5, 6], [], [(DELETE, 0, None), (DELETE, 1, None)]),
    ([], [], []),
    # a shifted answer: one token inserted in front, the rest equal (not three replacements)
    ([1, 2], [2, 3], [(DELETE, 0, None), (EQUAL, 1, 0), (INSERT, None, 1)]),
    # unequal lengths pair up from the start; the surplus comes last
    ([1, 2, 3, 4, 5], [9, 8], [(REPLACE, 0, 0), (REPLACE, 1, 1), (DELETE, 2, None), (DELETE, 3, None),
                               (DELETE, 4, None)]),
    (list("kitten"), list("sitting"), [(REPLACE, 0, 0), (EQUAL, 1, 1), (EQUAL, 2, 2), (EQUAL, 3, 3),
                                       (REPLACE, 4, 4), (EQUAL, 5, 5), (INSERT, None, 6)]),
])
def test_align_known_sequences(a, b, expected):
    assert kinds(a, b) == expected


@pytest.mark.parametrize("a, b, distance", [
    (list("kitten"), list("sitting"), 3), (list("flaw"), list("lawn"), 2), (list("intention"), list("execution"), 5),
    (list("abc"), list("xyz"), 3), (list("abcdef"), list("abcdef"), 0), (list("a" * 30), list("a" * 29 + "b"), 1),
])
def test_the_script_is_minimal_and_rebuilds_b(a, b, distance):
    ops = align(a, b)
    assert sum(op.kind != EQUAL for op in ops) == distance  # the Levenshtein distance
    assert [a[op.a] for op in ops if op.a is not None] == a  # every token of a once, in order
    assert [b[op.b] for op in ops if op.b is not None] == b
    assert all(a[op.a] == b[op.b] for op in ops if op.kind == EQUAL)
    assert all(a[op.a] != b[op.b] for op in ops if op.kind == REPLACE)


def test_summary_and_first_divergence():
    ops = align([7, 7, 1, 2, 9], [7, 7, 3, 2])
    summary = summarize(ops)
    assert (summary.equal, summary.changed, summary.inserted, summary.deleted) == (3, 1, 0, 1)
    assert summary.first == first_divergence(ops) and (summary.first.kind, summary.first.a) == (REPLACE, 2)
    assert "token 3" in summary.describe()
    same = summarize(align([1, 2], [1, 2]))
    assert same.identical and "identical" in same.describe()


def test_the_diff_view_shows_the_alignment_and_names_the_first_divergence(qtbot, loop):
    from c2c_playground.conversation import Token
    from c2c_playground.widgets.diff_view import DiffView

    view = DiffView()
    qtbot.addWidget(view)
    view.set_panes(["1 · Text relay", "2 · Cache fusion", "3 · Receiver alone"])
    assert view.chosen() == (0, 1)
    with qtbot.waitSignal(view.panes_chosen) as chosen:
        view.b_combo.setCurrentIndex(2)
    assert chosen.args == [0, 2]

    a = [Token(i, t) for i, t in zip([10, 11, 12, 13], ["The", " capital", " is", " Paris"])]
    b = [Token(i, t) for i, t in zip([10, 11, 12, 14, 15], ["The", " capital", " is", " Lyon", "."])]
    ops = align([t.key for t in a], [t.key for t in b])
    view.show_alignment(ops, summarize(ops), a, b, streaming=False)
    view.resize(700, 300)
    view.show()
    text = view.divergence.text()
    assert "token 4" in text and "after 3 identical tokens" in text
    assert "\u201c\u00b7Paris\u201d" in text and "\u201c\u00b7Lyon\u201d" in text  # spaces shown as dots
    assert "3 same, 1 changed, 0 only in A, 1 only in B" in view.counts.text()
    assert view.canvas.first is ops[3] and view.canvas.minimumHeight() > 0
    assert not view.grab().isNull()

    # while B still streams, a shorter B is "not there yet", not a deletion the user should worry about
    ops = align([t.key for t in a], [t.key for t in a[:2]])
    view.show_alignment(ops, summarize(ops), a, a[:2], streaming=True)
    assert "nothing there yet" in view.divergence.text()
    view.show_alignment(align([1], []), summarize(align([1], [])), a[:1], [], streaming=True)
    assert "B has not answered yet" in view.divergence.text()


def test_a_long_diff_is_laid_out_anew_for_each_alignment_and_painted_to_its_last_row(qtbot, loop):
    from PySide6.QtGui import QColor, QImage

    from c2c_playground.conversation import Token
    from c2c_playground.widgets.diff_view import AlignmentCanvas

    canvas = AlignmentCanvas()
    qtbot.addWidget(canvas)
    canvas.resize(600, 100)
    long_a = [Token(i % 50, f" w{i % 50}") for i in range(2000)]
    long_b = [Token(i % 50 if i % 7 else 99, f" w{i % 50}" if i % 7 else " x") for i in range(2000)]
    ops = align([t.key for t in long_a], [t.key for t in long_b])
    canvas.set_alignment(ops, long_a, long_b, first_divergence(ops))
    tall = canvas.minimumHeight()
    x, y, w, _ = canvas._cells(canvas.width())[-1]
    canvas.resize(600, tall)
    image = QImage(canvas.size(), QImage.Format.Format_RGB32)
    canvas.render(image)
    # the last column is drawn (its cell is not the white background)
    assert image.pixelColor(int(x + w / 2), int(y + 3)) != QColor("#ffffff")

    short = ops[:100]  # a new alignment: the cached layout of the old one must not be reused
    canvas.set_alignment(short, long_a, long_b, None)
    assert 0 < canvas.minimumHeight() < tall / 10


def _streamed(a, b, n):
    """The first ``n`` tokens of each answer, and their alignment (as the window hands them over)."""
    return align([t.key for t in a[:n]], [t.key for t in b[:n]]), a[:n], b[:n]


def test_a_streaming_diff_lays_out_and_paints_only_the_columns_that_changed(qtbot, loop):
    from c2c_playground.conversation import Token
    from c2c_playground.widgets.diff_view import AlignmentCanvas, DiffView

    view = DiffView()
    qtbot.addWidget(view)
    view.resize(700, 300)
    view.show()
    qtbot.waitExposed(view)
    canvas = view.canvas
    a = [Token(i % 50, f" w{i % 50}") for i in range(1500)]
    b = [Token(i % 50 if i % 7 else 99, f" w{i % 50}" if i % 7 else " x") for i in range(1500)]
    ops, sa, sb = _streamed(a, b, 1200)
    view.show_alignment(ops, summarize(ops), sa, sb, streaming=True)
    qtbot.waitUntil(lambda: canvas.columns_painted > 0)
    # a paint draws the rows in view, not the whole answer
    painted = canvas.columns_painted
    canvas.repaint()
    assert 0 < canvas.columns_painted - painted < len(ops) / 5

    for n in (1203, 1206, 1209):  # tokens stream in at the end, below the rows in view
        laid_out, painted = canvas.columns_laid_out, canvas.columns_painted
        ops, sa, sb = _streamed(a, b, n)
        view.show_alignment(ops, summarize(ops), sa, sb, streaming=True)
        qtbot.wait(20)
        # only the new columns are placed (once per width the layouts ask for), and nothing in view is drawn again
        assert 0 < canvas.columns_laid_out - laid_out < 60
        assert canvas.columns_painted == painted
    # the layout grown column by column is the one a fresh canvas makes of the same alignment
    fresh = AlignmentCanvas()
    qtbot.addWidget(fresh)
    fresh.set_alignment(ops, sa, sb, summarize(ops).first)
    assert canvas._cells(canvas.width()) == fresh._cells(canvas.width())

    # an alignment that changes near the start (another pane chosen) repaints what is in view
    other = [Token(i % 40, f" v{i % 40}") for i in range(1209)]
    ops = align([t.key for t in sa], [t.key for t in other])
    painted = canvas.columns_painted
    view.show_alignment(ops, summarize(ops), sa, other, streaming=False)
    qtbot.waitUntil(lambda: canvas.columns_painted > painted)
    assert canvas._cells(canvas.width())[-1][3] == ops[-1]

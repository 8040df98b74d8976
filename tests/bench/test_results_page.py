"""docs/benchmarks.md is rendered from bench/results/*.json and never edited by hand."""

import importlib.util
import json
import shutil

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("results_page", REPO / "bench" / "results_page.py")
results_page = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results_page)


def test_the_benchmarks_page_is_what_the_results_render():
    assert results_page.DOCS_PAGE.read_text() == results_page.page(), \
        "stale: run `python bench/results_page.py > docs/benchmarks.md`"


def test_a_changed_figure_or_a_new_result_changes_the_page(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(results_page.RESULTS, results)
    fused = json.loads((results / "fused_loss.json").read_text())
    fused["memory_ratio"] = 123.5
    (results / "fused_loss.json").write_text(json.dumps(fused))
    assert results_page.page(results) != results_page.page() and "| `memory_ratio` | 123.5 |" in \
        results_page.page(results)
    results_page.write_results(results / "new_bench.json", {"speedup": 2.0, "hits": list(range(20))})
    page = results_page.page(results)
    assert "## new_bench" in page and "| `speedup` | 2 |" in page and "`hits`" not in page  # long lists stay out
    assert "Measured " in page.split("## new_bench")[1] and "UTC on " in page

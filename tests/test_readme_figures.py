"""bench/check_readme_figures.py: every number in the README's tables is in the record the table cites, and a figure
changed by hand fails the check (negative control)."""
import importlib.util
import json

from conftest import REPO

spec = importlib.util.spec_from_file_location("check_readme_figures", REPO / "bench" / "check_readme_figures.py")
checker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checker)


def test_every_table_figure_of_the_readme_is_in_its_record():
    misses, checked = checker.check(REPO / "README.md")
    assert checked > 100 and misses == [], "\n".join(misses)


def test_a_changed_figure_fails(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "results").symlink_to(REPO / "bench" / "results")
    text = (REPO / "README.md").read_text()
    (tmp_path / "README.md").write_text(text)
    assert checker.check(tmp_path / "README.md")[0] == []
    # the demo's headline figure, one point up: no record holds it
    assert "| 0.0 % | **15.6 %** |" in text
    (tmp_path / "README.md").write_text(text.replace("| 0.0 % | **15.6 %** |", "| 0.0 % | **16.7 %** |"))
    misses, _ = checker.check(tmp_path / "README.md")
    assert len(misses) == 1 and "16.7" in misses[0] and "demo_recipe.json" in misses[0]


def test_rules_on_a_small_readme(tmp_path):
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    (results / "r.json").write_text(json.dumps({"ex": 0.203125, "seconds": 809, "rss_bytes": 3.5 * 2 ** 30}))
    (results / "t.md").write_text("| a | 17.1 |\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "Measured ([json](bench/results/r.json)):\n\n| run | EX | time | RSS |\n|---|---|---|---|\n"
        "| step 150 `--lr 2e-3` | 20.3 % | 809 s, 13.5 min | 3.5 GiB |\n\n"
        "## Next\n\n<!-- record: bench/results/t.md -->\n| x | y |\n|---|---|\n| 7B | 17.1 |\n\n"
        "| no | record |\n|---|---|\n| a | 1.5 |\n")
    misses, checked = checker.check(readme)
    # labels (first column) and `code` are not figures; units: x100, /60, /2**30; a Markdown record matched as text
    assert checked == 5 and misses == ["README.md:14: a table of 1 figures cites no bench/results record"]
    readme.write_text(readme.read_text().replace("| 17.1 |", "| 17.2 |"))
    assert any("17.2" in m for m in checker.check(readme)[0])
